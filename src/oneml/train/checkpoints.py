"""Resumable runs: where a run's checkpoints live and how a run stops early at a given step.

A run with ``train.save_steps`` keeps Trainer checkpoints (weights, optimizer, scheduler, RNG) in
``<root>/runs/.<run id>.ckpt/``, outside the staging folder, so they survive a crash; rerunning the same
config resumes from the newest complete one. The folder also keeps what must not be recomputed on resume:
the evaluation before training (the model has moved since) and the MLflow run to continue.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from oneml.tracking.layout import checkpoint_dir, read_json, write_json  # noqa: F401 - train/ and study/ import them here
from oneml.tracking.system import process_alive

KEEP = 2
"""Complete checkpoints kept: the newest, and the one before in case the newest turns out unreadable."""
PARTIAL = ".partial-"
"""Prefix of the folder a checkpoint is written into before its one rename (train/hooks.py)."""


def last_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose trainer state was written (a crash mid-save leaves an incomplete one)."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if _readable(p / "trainer_state.json")]
    return max(done, key=step_of, default=None)


def step_of(path: Path) -> int:
    return int(path.name.split("-")[-1])


def _readable(state: Path) -> bool:
    try:
        return isinstance(json.loads(state.read_text()), dict)
    except (OSError, ValueError):
        return False


def remove(path: Path) -> None:
    """Rename first, so that a kill mid-delete leaves a partial folder, never a damaged ``checkpoint-N``."""
    doomed = path.parent / f"{PARTIAL}old-{path.name}"
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def clear_leftovers(run_dir: Path) -> None:
    """Remove the staging folders that killed attempts at this run left (``.<run id>.tmp-<pid>``, ``.old-<pid>``);
    a live process's are kept, so that two processes never delete each other's work."""
    for kind in ("tmp", "old"):
        for path in run_dir.parent.glob(f".{run_dir.name}.{kind}-*"):
            pid = path.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def rung_file(folder: Path, step: int) -> Path:
    return folder / f"rung-{step}.json"


def StopAt(step: int):  # noqa: N802 - reads as the callback class it builds
    """Stop training at ``step`` and checkpoint there, so that the run can continue later from exactly that
    point (successive halving pauses runs at a rung this way without changing their config or run id)."""
    from transformers import TrainerCallback

    class _StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= step:
                control.should_training_stop = True
                control.should_save = True
            return control

    return _StopAt()
