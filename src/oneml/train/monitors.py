"""Diagnostics every run records, whatever the method.

- Gradient norm: the Trainer reports it whenever it logs; we make it log every 10 steps for the first
  100 steps (where methods differ most), then at the logging interval.
- Exploding gradients: a gradient norm (before clipping, the logged ``grad_norm``) above
  `train.max_grad_norm_stop` fails the run at that step, like a NaN/Inf loss or gradient does.
- Steps to a loss threshold: the first logged step whose training loss is at or below
  `train.loss_threshold` (the "fast convergence" metric of the decision guide), and the wall seconds from the
  start of training to that step (``seconds_to_threshold``; after a resume, from the resume, like
  ``train_wall_seconds``). A run that never reaches it logs neither: analysis/survival.py censors it.
"""

from __future__ import annotations

import time

from transformers import TrainerCallback

EARLY_STEPS = 100
EARLY_EVERY = 10


class EarlyLogging(TrainerCallback):
    """Forces a log record (loss, grad_norm, lr) every 10 steps during the first 100."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step <= EARLY_STEPS and state.global_step % EARLY_EVERY == 0:
            control.should_log = True
        return control


class StepsToThreshold(TrainerCallback):
    def __init__(self, threshold: float, log_metrics):
        self.threshold = threshold
        self.log_metrics = log_metrics
        self.step: int | None = None
        self._start: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.monotonic()  # monotonic: a clock adjustment mid-run must not change a duration

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if self.step is None and loss is not None and loss <= self.threshold:
            self.step = state.global_step
            metrics = {"steps_to_threshold": float(self.step)}
            if self._start is not None:
                metrics["seconds_to_threshold"] = time.monotonic() - self._start
            self.log_metrics(metrics, state.global_step)


def _all_finite(grads: list) -> bool:
    import torch

    device = grads[0].device
    norms = torch.stack([n.float().to(device) for n in torch._foreach_norm(grads)])  # grads may span devices
    return bool(torch.isfinite(norms).all())


class TrainingDiverged(RuntimeError):
    """The loss or the gradients became NaN/Inf: the run stops and is recorded as failed at that step."""


class StopOnNonFinite(TrainerCallback):
    """Checks the gradients before every optimizer step (after clipping, before they touch the weights), so a
    diverged run fails at the step it diverged instead of finishing with NaN weights and NaN metrics."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        # One fused norm per step (a NaN/Inf anywhere makes its tensor's norm non-finite) and one host sync,
        # instead of a check and a sync per tensor: this runs on every step of every run.
        if grads and not _all_finite(grads):
            raise TrainingDiverged(
                f"non-finite gradients at step {state.global_step + 1} (loss or gradients are NaN/Inf); "
                "lower train.learning_rate or check the data"
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        import math

        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingDiverged(f"training loss is {loss} at step {state.global_step}")
