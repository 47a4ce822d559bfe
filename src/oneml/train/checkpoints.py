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
from typing import Any

from oneml.tracking.system import process_alive
from oneml.train.faults import fault

KEEP = 2
"""Complete checkpoints kept: the newest, and the one before in case the newest turns out unreadable."""
_PARTIAL = ".partial-"


def checkpoint_dir(root: Path, run_id: str) -> Path:
    return root / "runs" / f".{run_id}.ckpt"


def last_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose trainer state was written (a crash mid-save leaves an incomplete one)."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if _readable(p / "trainer_state.json")]
    return max(done, key=_step, default=None)


def _step(path: Path) -> int:
    return int(path.name.split("-")[-1])


def _readable(state: Path) -> bool:
    try:
        return isinstance(json.loads(state.read_text()), dict)
    except (OSError, ValueError):
        return False


def atomic_saves(trainer) -> None:
    """Make the Trainer publish each checkpoint with one rename, keep the newest ``KEEP``, and clear what a
    killed save left behind. Wraps the trainer instance's own save: no callback runs between its writes."""
    if trainer.args.world_size > 1:
        # Several processes write one checkpoint (sharded states) and one renaming it could race the others, so
        # multi-process runs keep the Trainer's in-place save; trainer_state.json, written last, marks it complete.
        return
    folder = Path(trainer.args.output_dir)
    for leftover in folder.glob(f"{_PARTIAL}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    save = trainer._save_checkpoint

    def save_then_rename(model, trial):
        staging = folder / f"{_PARTIAL}{trainer.state.global_step}"
        shutil.rmtree(staging, ignore_errors=True)
        trainer.args.output_dir = str(staging)
        try:
            save(model, trial)  # writes staging/checkpoint-N (and rotates nothing: it is alone there)
            written = staging / f"checkpoint-{trainer.state.global_step}"
            fault("checkpoint")
            final = folder / written.name
            if final.exists():  # a stale one from an earlier attempt at this step
                _remove(final)
            os.replace(written, final)
        finally:
            trainer.args.output_dir = str(folder)
            shutil.rmtree(staging, ignore_errors=True)
        for old in sorted(folder.glob("checkpoint-*"), key=_step)[:-KEEP]:
            _remove(old)

    trainer._save_checkpoint = save_then_rename


def _remove(path: Path) -> None:
    """Rename first, so that a kill mid-delete leaves a partial folder, never a damaged ``checkpoint-N``."""
    doomed = path.parent / f"{_PARTIAL}old-{path.name}"
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
