"""DDP and FSDP with nccl on the one GPU (a world of one process, under torchrun): oneml's strategy arguments set
up the engine they name, and the run trains."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gpukit import GPU

pytestmark = GPU
WORKER = Path(__file__).with_name("dist_worker.py")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("strategy, engine", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP")])
def test_strategy_sets_up_its_engine_with_nccl_and_trains(tmp_path, strategy, engine):
    out = tmp_path / "report.json"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "--master-port", str(free_port()),
        str(WORKER), strategy, str(tmp_path), str(out),
    ]  # fmt: skip
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["engine"] == engine and report["backend"] == "nccl" and report["world_size"] == 1
    assert report["steps"] == 3 and report["losses"] and all(math.isfinite(x) for x in report["losses"])
