"""Test setup: no network, a persistent test cache, the shared public data seeded into it.

ONEML_HOME points at .oneml-cache/test-home in the repository (git-ignored), so the embedded model
is converted once per machine, not once per test run. The data catalogue finds the shared copies of
alpaca-demo, dpo-demo and gsm8k there, exactly where it would have cached them after a download.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder missing: {SHARED_DATA}")
    return SHARED_DATA
