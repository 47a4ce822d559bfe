"""What a run does when the machine fails it: out of memory, a full disk, SIGTERM or Ctrl-C.

- Before training (``check_disk``): the run root must have room for what the run will write, or the run stops
  with one line naming the path and nothing recorded. The estimate is deliberately pessimistic, see DISK_RULE.
- During the run (``explain``): out of memory and a full disk become one actionable line (an OnemlError, so the
  CLI prints it and exits 2); the run is recorded FAILED with that line.
- SIGTERM (``interruptible``) is turned into an ``Interrupted`` exception, handled as Ctrl-C is: the run is
  recorded KILLED, its staging folder removed and its checkpoints kept, so rerunning the same command resumes.
"""

from __future__ import annotations

import errno
import functools
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from oneml.errors import Interrupted, OnemlError
from oneml.train.faults import fault

MiB = 1 << 20
DISK_RULE = (
    "1.5 x (final weights x 2 [run folder + local MLflow artifact] "
    "+ 3 checkpoints x (weights + AdamW moments [+ the best weights with early stopping]) [2 kept + 1 being "
    "written]) + 64 MiB"
)
"""Free space a run needs under tracking.root. Weights count 4 bytes per trainable parameter (fp32, the widest
a trained parameter is kept in; PiSSA/SORSA save rank 2r, so x2); AdamW keeps two fp32 moments per trainable
parameter. 64 MiB covers the SQLite store, metrics, diagnostics and the tokenizer files."""


@contextmanager
def interruptible():
    """Turn SIGTERM into ``Interrupted`` for the duration of a run (main thread only: Python's rule)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def guarded(train):
    """``train`` with SIGTERM handled, and out of memory or a full disk before its run exists (loading the model,
    preparing data) turned into one line; nothing is recorded then, as for any input check."""

    @functools.wraps(train)
    def run(config, *args, **kwargs):
        with interruptible():
            try:
                return train(config, *args, **kwargs)
            except (MemoryError, RuntimeError, OSError) as err:
                failure = explain(err, config, 0, Path(config.tracking.root).resolve())
                if failure is None:
                    raise
            release_memory()
            raise failure

    return run


class RunGuard(TrainerCallback):
    """Knows the step a failure happened at; the ``step`` fault point (tests only) sits mid-step."""

    def __init__(self):
        self.step = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = state.global_step + 1

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        fault("step")


def needed_bytes(config, sizes: dict[str, Any], local_artifacts: bool) -> int:
    """Bytes a run writes under tracking.root at its peak (DISK_RULE)."""
    trainable = int(sizes.get("trainable_params", 0))
    weights = 4 * trainable * config.method.saved_copies()
    final = weights * (2 if local_artifacts else 1) if config.train.save_adapter else 0
    best = 4 * trainable if config.train.early_stopping is not None else 0  # each checkpoint keeps the best step's
    checkpoints = 3 * (weights + 8 * trainable + best) if config.train.save_steps else 0
    return int(1.5 * (final + checkpoints)) + 64 * MiB


def check_disk(config, root: Path, sizes: dict[str, Any], uri: str) -> None:
    need = needed_bytes(config, sizes, uri.startswith(("sqlite:", "file:")) or "://" not in uri)
    free = shutil.disk_usage(root).free
    if free < need:
        raise OnemlError(
            f"tracking.root: {root} has {free / MiB:,.0f} MiB free, this run needs about {need / MiB:,.0f} MiB "
            "(weights, checkpoints, records); free space or set tracking.root elsewhere"
        )


def is_out_of_memory(err: BaseException) -> bool:
    import torch

    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err).lower()  # torch's writers and SQLite (through MLflow) wrap it in their own errors
    return "no space left on device" in text or "database or disk is full" in text


def memory_advice(config) -> str:
    """What to change, given what the run already does: each tip names the key and a value to try."""
    t, m = config.train, config.method
    tips = []
    if t.batch_size > 1:
        tips.append(f"train.batch_size={t.batch_size // 2} with train.grad_accum={t.grad_accum * 2} (same batch)")
    if not t.gradient_checkpointing and m.gradient_checkpointing:
        tips.append("train.gradient_checkpointing=true")
    if getattr(m, "quantize", None) == "none":
        tips.append("method.quantize=nf4 (4-bit base, as method.name=qlora)")
    if config.data.max_length > 64:
        tips.append(f"data.max_length={config.data.max_length // 2}")
    return "; ".join(tips) or "a smaller model or a device with more memory"


def explain(err: BaseException, config, step: int, root: Path) -> OnemlError | None:
    """One actionable line for a failure the machine caused, or None for any other error."""
    where = f"at step {step}" if step else "before training"
    if is_out_of_memory(err):
        return OnemlError(f"out of memory {where}; try {memory_advice(config)}")
    if is_disk_full(err):
        path = getattr(err, "filename", None) or root
        resume = "; rerun to resume from the last checkpoint" if config.train.save_steps else ""
        return OnemlError(f"disk full {where} writing {path}: free space under {root}{resume}")
    return None


def release_memory() -> None:
    """After an out-of-memory error, give the allocator's cache back so that the next run in this process can
    use it (a study runs many)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
