"""Test setup: no network, a persistent test cache, the shared public data seeded into it, and the CPU for every
test not marked ``gpu``.

ONEML_HOME points at .oneml-cache/test-home in the repository (git-ignored), so the embedded model
is converted once per machine, not once per test run. The data catalogue finds the shared copies of
alpaca-demo, dpo-demo and gsm8k there, exactly where it would have cached them after a download.

The default suite compares runs with float32 references at float32 tolerances. On a GPU host ``device: auto``
would send those runs to CUDA in bfloat16 and fail them for rounding, so each test not marked ``gpu`` sees no
CUDA (in this process, and in the processes it starts): the suite gives the same verdicts on any host, with its
CPU assertions intact. The ``gpu`` tests see the GPU and hold CUDA to tolerances for its dtypes. CUDA (and
bitsandbytes, which picks its native library once, at import) start before any test, so that hiding the GPU
from one test cannot hide it from the process.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from oneml.distributed import devices

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TEST_HOME = ROOT / ".oneml-cache" / "test-home"

os.environ["ONEML_HOME"] = str(TEST_HOME)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("MLFLOW_TRACKING_URI", None)

(TEST_HOME / "data").mkdir(parents=True, exist_ok=True)
for name in ("alpaca_en_demo.json", "dpo_en_demo.json", "gsm8k_test.jsonl", "IFBench_test.jsonl"):
    src, dst = SHARED_DATA / name, TEST_HOME / "data" / name
    if src.is_file() and not dst.is_file():
        shutil.copyfile(src, dst)


# One GPU for the test process, as for any one-process run (picked before CUDA starts; counted through NVML).
devices.pin_one_process(1, False, "auto")
if torch.cuda.is_available():
    torch.cuda.init()
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pass


@pytest.fixture(autouse=True)
def _cpu_unless_marked_gpu(request, monkeypatch):
    if request.node.get_closest_marker("gpu") is None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder missing: {SHARED_DATA}")
    return SHARED_DATA
