"""Every change oneml makes to a Trainer instance, in one place, and the list of what it touches.

transformers and TRL give callbacks no say over three things a run needs, so three of the Trainer's own
methods are wrapped on the instance (never on the class, so other trainers in the process are untouched):

- ``_clip_grad_norm``: the gradient norm *before* clipping, to stop an exploding run (callbacks only see the
  gradients after clipping);
- ``_save_checkpoint``: publish each checkpoint with one rename (a kill mid-save never leaves a half checkpoint
  that looks complete; no callback runs between its writes);
- ``get_batch_samples`` / ``_track_num_input_tokens``: count the tokens a batch carries in ``REAL_TOKENS`` (packed
  rows, whose pad tails transformers would count; ORPO's and CPO's chosen/rejected pairs, which it cannot count at
  all), counted on the host by the collator, so that the count costs no device synchronisation per micro-batch.

Two more places change a library's behaviour, and are listed here so that one test covers them all: the
chunked LM head replaces the *model's* forward (models/lm_head.py), and ORPO's and CPO's trainers are subclasses
that override ``concatenated_forward`` (objectives/orpo.py, cpo.py). `PATCHED` names every attribute;
tests/train/test_hooks.py checks that each still exists in the installed transformers and TRL, so an upgrade
that renames one fails there, not silently in a run.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from oneml.data.packing import REAL_TOKENS
from oneml.train.checkpoints import KEEP, PARTIAL, remove, step_of
from oneml.train.faults import fault
from oneml.train.monitors import TrainingDiverged

PATCHED: tuple[tuple[str, str], ...] = (
    ("transformers.Trainer", "_clip_grad_norm"),
    ("transformers.Trainer", "_save_checkpoint"),
    ("transformers.Trainer", "get_batch_samples"),
    ("transformers.Trainer", "_track_num_input_tokens"),
    ("trl.experimental.orpo.ORPOTrainer", "concatenated_forward"),
    ("trl.experimental.cpo.CPOTrainer", "concatenated_forward"),
)
"""(class, attribute) of every library method oneml wraps or overrides."""


def install(trainer: Any, *, max_grad_norm_stop: float | None, checkpoints: bool, extras: tuple = ()) -> None:
    """Apply the run's hooks to a freshly built trainer (the runner calls this once, after the objective).
    ``extras``: callables writing more state into each checkpoint folder before it is published."""
    stop_on_exploding_norm(trainer, max_grad_norm_stop)
    if checkpoints:
        atomic_saves(trainer, extras)
    count_real_tokens(trainer)


def stop_on_exploding_norm(trainer, limit: float | None) -> None:
    """Fail the run at the step whose gradient norm, before clipping, exceeds ``limit``.

    Clipping bounds every update, so it hides a blown-up loss surface until the loss turns NaN several steps (or
    never) later. Callbacks only see the gradients after clipping, hence this wraps the trainer instance's clip,
    which returns the norm before clipping (the number logged as ``grad_norm``).
    """
    if limit is None:
        return
    clip = trainer._clip_grad_norm

    def clip_and_check(model):
        norm = clip(model)
        value = float(norm)
        if math.isfinite(value) and value > limit:  # a non-finite norm is StopOnNonFinite's to report
            raise TrainingDiverged(
                f"gradient norm {value:.4g} exceeds train.max_grad_norm_stop={limit:g} at step "
                f"{trainer.state.global_step + 1}; lower train.learning_rate or check the data"
            )
        return norm

    trainer._clip_grad_norm = clip_and_check


def atomic_saves(trainer, extras: tuple = ()) -> None:
    """Make the Trainer publish each checkpoint with one rename, keep the newest ``KEEP``, and clear what a
    killed save left behind. Wraps the trainer instance's own save: no callback runs between its writes, so
    ``extras`` (early stopping's state) write into the checkpoint here, before the rename that publishes it."""
    if trainer.args.world_size > 1:
        # Several processes write one checkpoint (sharded states) and one renaming it could race the others, so
        # multi-process runs keep the Trainer's in-place save; trainer_state.json, written last, marks it complete.
        return
    folder = Path(trainer.args.output_dir)
    for leftover in folder.glob(f"{PARTIAL}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    save = trainer._save_checkpoint

    def save_then_rename(model, trial):
        staging = folder / f"{PARTIAL}{trainer.state.global_step}"
        shutil.rmtree(staging, ignore_errors=True)
        trainer.args.output_dir = str(staging)
        try:
            save(model, trial)  # writes staging/checkpoint-N (and rotates nothing: it is alone there)
            written = staging / f"checkpoint-{trainer.state.global_step}"
            for write in extras:
                write(written)
            fault("checkpoint")
            final = folder / written.name
            if final.exists():  # a stale one from an earlier attempt at this step
                remove(final)
            os.replace(written, final)
        finally:
            trainer.args.output_dir = str(folder)
            shutil.rmtree(staging, ignore_errors=True)
        for old in sorted(folder.glob("checkpoint-*"), key=step_of)[:-KEEP]:
            remove(old)

    trainer._save_checkpoint = save_then_rename


def count_real_tokens(trainer: Any) -> None:
    """Make the trainer's tokens-seen count (train_tokens, tokens/s) the examples' own tokens where a batch carries
    their count (`REAL_TOKENS`, computed on the host by the collator); other batches are counted by transformers.

    The count is taken out when the trainer fetches an optimizer step's batches, before any forward pass, and added
    where transformers counts tokens: as a host integer in one process (transformers' own count reads a device
    tensor back, a synchronisation per micro-batch), summed over processes with one collective otherwise.
    """
    fetch, counts = trainer.get_batch_samples, {}
    own = getattr(trainer, "_track_num_input_tokens", None)
    if not callable(own):
        raise RuntimeError("transformers' Trainer._track_num_input_tokens is gone: update count_real_tokens")

    def get_batch_samples(*args: Any, **kwargs: Any):
        batches, items = fetch(*args, **kwargs)
        for batch in batches:
            if isinstance(batch, dict) and REAL_TOKENS in batch:
                counts[id(batch)] = batch.pop(REAL_TOKENS)
        return batches, items

    def track(inputs: dict[str, Any]) -> None:
        count = counts.pop(id(inputs), None)
        if count is None:
            return own(inputs)
        if trainer.args.world_size > 1:
            real = torch.as_tensor(count, device=trainer.args.device, dtype=torch.int64)
            count = trainer.accelerator.gather(real).sum().item()
        trainer.state.num_input_tokens_seen += int(count)

    trainer.get_batch_samples = get_batch_samples
    trainer._track_num_input_tokens = track
