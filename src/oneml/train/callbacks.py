"""Trainer callbacks: live progress, per-step MLflow metrics, step timing; and a peak-memory sampler."""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from typing import Any

from transformers import TrainerCallback

from oneml.tracking.tags import STUDY as STUDY_TAG

# Trainer/TRL log names -> ours (the rest pass through unchanged)
_RENAME = {
    "loss": "train_loss",
    "train_loss": "train_loss_mean",  # the Trainer's whole-run average, logged once at the end
    "mean_token_accuracy": "train_token_accuracy",
    "entropy": "train_entropy",
}
_SKIP = {"epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second"}
_MAY_BE_MISSING = {"entropy", "mean_token_accuracy", "logits/chosen", "logits/rejected"}
"""Statistics a fused head other than ours does not compute (NaN, train.chunked_loss liger/cce): not logged."""


class MlflowMetrics(TrainerCallback):
    """Logs every Trainer log record to the run, at its optimizer step."""

    def __init__(self, recorder):
        self.recorder = recorder

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        missing = {k for k, v in logs.items() if k in _MAY_BE_MISSING and isinstance(v, float) and math.isnan(v)}
        metrics = {_RENAME.get(k, k): v for k, v in logs.items() if k not in _SKIP | missing}
        self.recorder.log_metrics(metrics, step=state.global_step)


class PeriodicEval(TrainerCallback):
    """Token-weighted evaluation every ``every`` steps (Trainer's own eval averages batch means), each offered to
    early stopping (train/early_stopping.py) when the run has it."""

    def __init__(self, every: int | None, run_eval, stopper=None):
        self.every = every
        self.run_eval = run_eval
        self.stopper = stopper

    def on_step_end(self, args, state, control, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            metrics = self.run_eval(state.global_step)
            if self.stopper is not None and self.stopper.observe(state.global_step, metrics):
                control.should_training_stop = True
                # No checkpoint of a stopped run: one would resume into a step the run never takes. A run killed
                # after this resumes from the previous checkpoint and stops here again.
                control.should_save = False


class StepTimer(TrainerCallback):
    """Time spent inside optimizer steps, so tokens/s excludes evaluation and setup.

    The first step this process takes is timed apart (``first_seconds``, and the tokens seen by its end): it carries
    one-off work (torch.compile's compilation, CUDA kernel selection, the allocator growing to its working set), so
    throughput is measured over the steps after it. On a GPU the host runs ahead of the device; the clock is read
    after a synchronisation at the end of the first and of the last step, so the steps in between add up to device
    time too.
    """

    def __init__(self):
        self.seconds = 0.0
        """Steps after the first."""
        self.first_seconds: float | None = None
        self.tokens_before: int = 0
        """Tokens seen when the timed steps began (the end of the first step)."""
        self._start: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is None:
            return
        first = self.first_seconds is None
        if first or state.global_step >= state.max_steps:
            _synchronize(args.device)
        elapsed = time.perf_counter() - self._start
        self._start = None
        if first:
            self.first_seconds = elapsed
            self.tokens_before = int(state.num_input_tokens_seen or 0)
        else:
            self.seconds += elapsed

    def throughput(self, tokens: float) -> dict[str, float]:
        """tokens/s over the steps after the first (over the first when it was the only one), and the step times."""
        first = self.first_seconds or 0.0
        if self.seconds > 0:
            rate = (tokens - self.tokens_before) / self.seconds
        else:
            rate = tokens / first if first else 0.0
        return {"train_seconds": first + self.seconds, "first_step_seconds": first, "tokens_per_second": rate}


def _synchronize(device) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


class RichProgress(TrainerCallback):
    """A rich progress bar over optimizer steps, with the latest loss and learning rate."""

    def __init__(self, progress, description: str):
        self.progress = progress
        self.description = description
        self.task: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.task = self.progress.add_task(self.description, total=state.max_steps, info="")

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.task is not None and logs and "loss" in logs:
            info = f"loss {logs['loss']:.4f}"
            if "learning_rate" in logs:
                info += f"  lr {logs['learning_rate']:.2e}"
            self.progress.update(self.task, info=info)


class PeakMemory:
    """Samples this process's resident memory in a thread; CUDA peak from torch's allocator stats."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self._proc = psutil.Process(os.getpid())
        self.interval = interval
        self.peak_rss = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)

    def __enter__(self):
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)

    def metrics(self) -> dict[str, float]:
        import torch

        out = {"peak_rss_mib": self.peak_rss / 2**20}
        if torch.cuda.is_available():
            out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        return out


class progress_bar:
    """A rich Progress while training (or nothing when progress is off)."""

    def __init__(self, enabled: bool, console):
        self.enabled, self.console, self.bar = enabled, console, None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.bar.__enter__()
        return self.bar

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


class LiveMetrics(TrainerCallback):
    """The run's latest step, loss, learning rate, tokens/s, memory and eval loss, written for Prometheus into the
    folder that `oneml.monitoring` serves (at most every ``every`` seconds between logs and evaluations)."""

    def __init__(self, folder, labels: dict[str, str], every: float = 0.5):
        import psutil

        self.folder, self.labels, self.every = folder, labels, every
        self.values: dict[str, float] = {}
        self._proc = psutil.Process(os.getpid())
        self._written = 0.0
        self._tokens: tuple[float, float] | None = None  # (time, tokens seen) at the previous log

    def _write(self, force: bool = False) -> None:
        from oneml.monitoring import write_run

        now = time.monotonic()
        if force or now - self._written >= self.every:
            import torch

            self.values["rss_bytes"] = float(self._proc.memory_info().rss)
            if torch.cuda.is_available():
                self.values["cuda_bytes"] = float(torch.cuda.memory_allocated())
            write_run(self.folder, self.labels, self.values)
            self._written = now

    def on_train_begin(self, args, state, control, **kwargs):
        self.values |= {"step": float(state.global_step), "max_steps": float(state.max_steps)}
        self._tokens = (time.monotonic(), float(state.num_input_tokens_seen or 0))
        self._write(force=True)

    def on_step_end(self, args, state, control, **kwargs):
        self.values["step"] = float(state.global_step)
        self._write()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        for key, name in (("loss", "train_loss"), ("learning_rate", "learning_rate"), ("grad_norm", "grad_norm")):
            if isinstance(logs.get(key), (int, float)):
                self.values[name] = float(logs[key])
        now, tokens = time.monotonic(), float(state.num_input_tokens_seen or 0)
        if self._tokens is not None and now > self._tokens[0] and tokens >= self._tokens[1]:
            self.values["tokens_per_second"] = (tokens - self._tokens[1]) / (now - self._tokens[0])
        self._tokens = (now, tokens)
        self._write(force=True)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and isinstance(metrics.get("eval_loss"), (int, float)):
            self.values["eval_loss"] = float(metrics["eval_loss"])
            self._write(force=True)

    def on_train_end(self, args, state, control, **kwargs):
        self.values["step"] = float(state.global_step)
        self._write(force=True)


def live_metrics(config) -> list[Any]:
    """The run's numbers for Prometheus, when a process serves them (`oneml.monitoring`, --metrics-port)."""
    from oneml.monitoring import current_folder

    folder = current_folder()
    if folder is None:
        return []
    labels = {"run_id": config.run_id, "method": config.method.name, "study": config.tracking.tags.get(STUDY_TAG, "")}
    return [LiveMetrics(folder, labels)]


class CompileClock(TrainerCallback):
    """With train.compile on: each step's time and tokens, so that the compilation is reported apart from the
    steady rate (`metrics`)."""

    WARMUP = 2
    """Steps counted as compilation: the first compiles, and the second may compile again when shapes first change
    (a batch of one row: dynamo specialises a dimension of size 1)."""

    def __init__(self):
        self._start: float | None = None
        self.steps: list[tuple[float, float]] = []
        """(seconds, tokens seen at its end) per step of this call."""

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is not None:
            self.steps.append((time.perf_counter() - self._start, float(state.num_input_tokens_seen or 0)))
            self._start = None

    def metrics(self) -> dict[str, float]:
        """``compile_seconds``: what the warm-up steps took beyond as many steady steps (their median), i.e. the
        compilation; ``steady_tokens_per_second``: tokens/s over the steps after them. Empty with too few steps."""
        if len(self.steps) <= self.WARMUP:
            return {}
        warm, rest = self.steps[: self.WARMUP], self.steps[self.WARMUP :]
        seconds = sum(took for took, _ in rest)
        typical = statistics.median(took for took, _ in rest)
        return {
            "compile_seconds": max(0.0, sum(took for took, _ in warm) - self.WARMUP * typical),
            "steady_tokens_per_second": (rest[-1][1] - warm[-1][1]) / seconds if seconds else 0.0,
        }


def compile_metrics(trainer) -> dict[str, float]:
    """The `CompileClock` figures of a trainer that has one (a compiled run), else none."""
    clocks = [c for c in trainer.callback_handler.callbacks if isinstance(c, CompileClock)]
    return clocks[0].metrics() if clocks else {}
