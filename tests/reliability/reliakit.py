"""Reliability tests share one tiny run (tiny-llama, 32 rows, 8 steps) and a way to run `oneml` as a user would,
in a subprocess that can be killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from oneml.tracking import resolve_tracking_uri

TINY = [
    "model.name=tiny-llama",
    "method.r=4",
    "method.alpha=8",
    "method.dropout=0.0",
    "data.max_samples=32",
    "data.eval_size=8",
    "data.max_length=96",
    "train.max_steps=8",
    "train.batch_size=4",
    "train.learning_rate=0.01",
    "train.warmup_ratio=0",
    "train.logging_steps=1",
    "train.save_adapter=false",
]


TINY_STUDY = Path(__file__).resolve().parents[2] / "configs" / "studies" / "tiny.yaml"


def write_study(folder: Path, **changes) -> Path:
    """configs/studies/tiny.yaml with its runs under ``folder/root`` and top-level keys replaced by ``changes``."""
    data = yaml.safe_load(TINY_STUDY.read_text())
    data["base"]["tracking"] = {"root": str(folder / "root")}
    data.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"  # not the study's name: a test may give it a hostile one
    path.write_text(yaml.safe_dump(data))
    return path


def overrides(root: Path, *extra: str) -> list[str]:
    return [*TINY, f"tracking.root={root}", *extra]


def tiny(root: Path, *extra: str):
    from oneml import load_run_config

    return load_run_config(None, overrides(root, *extra))


def cli(root: Path, *extra: str, fault: str | None = None, **popen) -> subprocess.Popen:
    """`oneml train -q --set ...` in its own process; ``fault`` sets ONEML_FAULT (a SIGKILL at that point)."""
    env = {k: v for k, v in os.environ.items() if k != "ONEML_FAULT"} | {"PYTHONUNBUFFERED": "1"}
    if fault:
        env["ONEML_FAULT"] = fault
    args = [a for o in overrides(root, *extra) for a in ("--set", o)]
    cmd = [sys.executable, "-m", "oneml", "train", "-q", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def records(root: Path, run_id: str) -> list:
    """The MLflow runs recorded for one run id, oldest first."""
    client = MlflowClient(resolve_tracking_uri(None, root))
    exp = client.get_experiment_by_name("oneml")
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], f"tags.`oneml.run_id` = '{run_id}'")
    return sorted(runs, key=lambda r: r.info.start_time)


def metrics(root: Path, run_id: str) -> dict[str, float]:
    return json.loads((root / "runs" / run_id / "metrics.json").read_text())


def tree(folder: Path) -> list[str]:
    """Every path under ``folder``, relative, sorted (to show nothing was left behind)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
