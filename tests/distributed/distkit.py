"""Distributed tests start real processes (torchrun / accelerate launch) running `python -m oneml train`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

TINY = {
    "model": {"name": "tiny-llama"},
    "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
    "data": {"dataset": "alpaca-demo", "max_samples": 64, "eval_size": 8, "max_length": 64},
    "train": {
        "max_steps": 6,
        "batch_size": 4,
        "learning_rate": 1.0e-2,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "logging_steps": 1,
    },
}


def write_config(folder: Path, **sections) -> Path:
    data = {k: dict(v) for k, v in TINY.items()}
    for key, value in sections.items():
        data[key] = data.get(key, {}) | value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def oneml(*args: str, timeout: int = 600, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1") | env_vars
    cmd = [sys.executable, "-m", "oneml", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


TINY_STUDY = Path(__file__).resolve().parents[2] / "configs" / "studies" / "tiny.yaml"


def write_study(folder: Path, name: str = "tiny", drop: tuple[str, ...] = (), **changes) -> Path:
    """configs/studies/tiny.yaml named ``name``, its runs under ``folder/root``, without the top-level keys in
    ``drop`` and with those in ``changes`` replaced."""
    data = {k: v for k, v in yaml.safe_load(TINY_STUDY.read_text()).items() if k not in drop} | changes
    data["name"] = name
    data["base"]["tracking"] = {"root": str(folder / "root")}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
