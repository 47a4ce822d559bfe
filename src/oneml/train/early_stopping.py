"""Early stopping on a validation metric, ending on the best evaluated step's weights.

Every ``train.eval_steps`` the run is evaluated on the validation rows (`callbacks.PeriodicEval`) and the metric
is offered to `EarlyStopping.observe`. A value better than the best so far by more than ``min_delta`` (in the
metric's own direction) makes that step the best and copies the trainable weights; ``patience`` evaluations in a
row without one stop the run. At the end the run is put back on the best step's weights, so that its adapter,
its eval_* metrics (those of the best step's evaluation) and its test_* metrics (scored after the restore) all
describe one model, chosen on validation rows only. The final evaluation at ``max_steps`` is a candidate too;
the evaluation before training (step 0) is not: the run selects among trained states.

Why not transformers' ``EarlyStoppingCallback`` with ``load_best_model_at_end``: its metric comes from
``Trainer.evaluate`` (batch means; oneml evaluates with the objective's own token-weighted evaluator and would
evaluate twice), its best value is set only on the Trainer's own evaluation path, and restoring reads the best
step's *checkpoint* from disk, which needs ``save_steps`` to be a multiple of ``eval_steps``, the best
checkpoint spared from rotation (oneml keeps its newest two, published atomically, see train/hooks.py) and a
checkpoint at all (runs without ``train.save_steps`` have none). Here the best weights are copied in memory when
they occur (the trainable parameters: an adapter is small) and written into every checkpoint with the counter,
before the checkpoint's one rename, so that a run killed and resumed stops at the same step and restores the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch

from oneml.analysis.metrics import EVAL_PREFIX, metric
from oneml.errors import OnemlError

STATE_FILE = "early_stopping.json"
WEIGHTS_FILE = "early_stopping.safetensors"
"""What a checkpoint holds of early stopping: the counter and best value (JSON), the best step's weights."""


class EarlyStopping:
    """The state of one run's early stopping: best value and step, evaluations since, the best weights."""

    def __init__(self, cfg: Any, model: torch.nn.Module):
        self.cfg = cfg
        self.model = model
        self.higher = metric(cfg.metric).higher_is_better
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.waited = 0
        """Evaluations since the last improvement."""
        self.stopped_at: int | None = None
        self.last_step: int | None = None
        self.last_metrics: dict[str, float] = {}
        self._weights: dict[str, torch.Tensor] = {}
        self._patterns: dict[str, Any] = {}

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def observe(self, step: int, metrics: dict[str, float]) -> bool:
        """One evaluation at ``step``; True when patience has run out (the run stops here)."""
        if self.cfg.metric not in metrics:  # the config check names the objective's metrics: a mismatch is a bug
            raise OnemlError(f"train.early_stopping.metric: the evaluation recorded no {self.cfg.metric}")
        value = float(metrics[self.cfg.metric])
        self.last_step, self.last_metrics = step, dict(metrics)
        if self._improves(value):
            self.best_value, self.best_step, self.waited = value, step, 0
            self.best_metrics = {k: float(v) for k, v in metrics.items() if k.startswith(EVAL_PREFIX)}
            self._copy_weights()
        else:
            self.waited += 1
        if self.waited >= self.cfg.patience and self.stopped_at is None:
            self.stopped_at = step
        return self.stopped

    def _improves(self, value: float) -> bool:
        if not math.isfinite(value):  # a NaN evaluation is never the best (and counts against patience)
            return False
        if self.best_value is None:
            return True
        gain = value - self.best_value if self.higher else self.best_value - value
        return gain > self.cfg.min_delta

    def _copy_weights(self) -> None:
        # Kept on the CPU: the device holds the training state already.
        self._weights = {
            name: p.detach().to("cpu", copy=True) for name, p in self.model.named_parameters() if p.requires_grad
        }
        self._patterns = _rank_patterns(self.model)

    def finish(self, step: int, metrics: dict[str, float]) -> bool:
        """The evaluation after the last step (a candidate too, unless it is the one observed at that step); then
        put the model back on the best step's weights. True when it restored another step's weights."""
        if self.last_step != step and not self.stopped:
            self.observe(step, metrics)
            self.stopped_at = None  # the budget ended the run, not patience
        if self.best_step is None or self.best_step == step:
            return False
        self.restore()
        return True

    def restore(self) -> None:
        params = dict(self.model.named_parameters())
        missing = sorted(set(self._weights) - set(params))
        if missing:
            raise OnemlError(f"train.early_stopping: the best weights name parameters the model lacks: {missing[:3]}")
        with torch.no_grad():
            for name, saved in self._weights.items():
                params[name].copy_(saved.to(params[name].device, params[name].dtype))
        for adapter, pattern in self._patterns.items():  # AdaLoRA's per-layer ranks at that step
            self.model.peft_config[adapter].rank_pattern = pattern

    def result(self, steps: int, max_steps: int) -> tuple[dict[str, float], dict[str, str]]:
        """Metrics (``best_step``, ``stopped_early``) and tags (stopped early, the reason) of the finished run."""
        from oneml.tracking import tags as tag

        best = self.best_step if self.best_step is not None else steps
        shown = "nan" if self.best_value is None else f"{self.best_value:.6g}"
        if self.stopped:
            reason = (
                f"patience: {self.cfg.metric} did not improve by more than {self.cfg.min_delta:g} in "
                f"{self.cfg.patience} evaluation(s) after step {best}; stopped at step {steps} of {max_steps}"
            )
        else:
            reason = f"max_steps: ran all {steps} steps"
        reason += f"; best {self.cfg.metric} {shown} at step {best}"
        if best != steps:
            reason += ", whose weights the run ends on"
        metrics = {"best_step": float(best), "stopped_early": 1.0 if self.stopped else 0.0}
        return metrics, {tag.STOPPED_EARLY: str(self.stopped).lower(), tag.STOP_REASON: reason}

    def rung_metrics(self) -> dict[str, float]:
        """At a halving rung: the eval_* of the best evaluation so far (what the run would end on if it ended
        here) and its step."""
        if self.best_step is None:
            return {}
        return self.best_metrics | {"best_step": float(self.best_step)}

    def save(self, folder: Path) -> None:
        """Into a checkpoint being written (train/hooks.py calls it before the checkpoint's rename)."""
        from safetensors.torch import save_file

        state = {
            "best_value": self.best_value,
            "best_step": self.best_step,
            "best_metrics": self.best_metrics,
            "waited": self.waited,
            "stopped_at": self.stopped_at,
            "last_step": self.last_step,
            "last_metrics": self.last_metrics,
            "rank_patterns": self._patterns,
        }
        if self._weights:
            save_file({k: v.contiguous() for k, v in self._weights.items()}, str(folder / WEIGHTS_FILE))
        (folder / STATE_FILE).write_text(json.dumps(state))

    def load(self, folder: Path) -> None:
        """From the checkpoint a run resumes from: the same counter, best value and weights as at that step."""
        from safetensors.torch import load_file

        path = folder / STATE_FILE
        if not path.is_file():
            raise OnemlError(
                f"train.early_stopping: checkpoint {folder} holds no early-stopping state (written by a run without "
                "early stopping?); delete it to start over"
            )
        state = json.loads(path.read_text())
        self.best_value, self.best_step = state["best_value"], state["best_step"]
        self.best_metrics, self.waited, self.stopped_at = state["best_metrics"], state["waited"], state["stopped_at"]
        self.last_step, self.last_metrics = state["last_step"], state["last_metrics"]
        self._patterns = state["rank_patterns"]
        weights = folder / WEIGHTS_FILE
        self._weights = load_file(str(weights)) if weights.is_file() else {}


def last_eval(run_eval, step: int, stopper) -> dict[str, float]:
    """The evaluation after training; when early stopping just evaluated this very step, that one (same weights)."""
    if stopper is not None and stopper.last_step == step:
        return dict(stopper.last_metrics)
    return run_eval(step)


def end_on_best(run, stopper, steps: int, metrics: dict[str, float]) -> dict[str, float]:
    """Put the model back on the best evaluated step's weights; its evaluation becomes the run's eval_*."""
    with run.console.status("restoring the best step's weights"):
        stopper.finish(steps, metrics)
    extra, tags = stopper.result(steps, run.config.train.max_steps)
    run.recorder.set_tags(tags)
    return stopper.best_metrics | extra


def _rank_patterns(model: torch.nn.Module) -> dict[str, Any]:
    """The rank pattern of each peft adapter that has one (AdaLoRA reallocates ranks as it trains; the saved
    adapter is cut to it, so the best step's pattern must come back with the best step's weights)."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict):
        return {}
    return {name: copy.deepcopy(c.rank_pattern) for name, c in configs.items() if getattr(c, "rank_pattern", None)}
