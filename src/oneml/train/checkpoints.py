"""Resumable runs: where a run's checkpoints live and how a run stops early at a given step.

A run with ``train.save_steps`` keeps Trainer checkpoints (weights, optimizer, scheduler, RNG) in
``<root>/runs/.<run id>.ckpt/``, outside the staging folder, so they survive a crash; rerunning the same
config resumes from the newest complete one. The folder also keeps what must not be recomputed on resume:
the evaluation before training (the model has moved since) and the MLflow run to continue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def checkpoint_dir(root: Path, run_id: str) -> Path:
    return root / "runs" / f".{run_id}.ckpt"


def last_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose trainer state was written (a crash mid-save leaves an incomplete one)."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, payload: Any) -> None:
    """Write via a temporary file so that a kill mid-write never leaves half a file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    tmp.replace(path)


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
