"""The state of one run, typed: what loading produced (`Setup`) and what every step after it reads
(`RunContext`), so the run loop passes one object instead of ten positional arguments."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneml.config import RunConfig
from oneml.paths import confined

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from oneml.data.prepare import PreparedData
    from oneml.methods import MethodContext
    from oneml.objectives import Speed


class Sink:
    """Where methods' diagnostics go. The method is applied before the MLflow run exists (so that a bad
    input records nothing), hence metrics and JSON artifacts (an init's record) are buffered until it is attached."""

    def __init__(self):
        self.recorder: Any = None
        self.folder: Path | None = None
        self._pending: list[tuple[dict[str, float], int]] = []
        self._pending_json: dict[str, Any] = {}

    def attach(self, recorder, folder: Path) -> None:
        self.recorder, self.folder = recorder, folder
        for metrics, step in self._pending:
            recorder.log_metrics(metrics, step)
        self._pending.clear()
        for name, payload in self._pending_json.items():
            self.log_json(name, payload)
        self._pending_json.clear()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.recorder is None:
            self._pending.append((metrics, step))
        else:
            self.recorder.log_metrics(metrics, step)

    def log_json(self, name: str, payload: Any) -> None:
        if self.folder is None:
            self._pending_json[name] = payload
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        confined(self.folder, name, "diagnostics").write_text(json.dumps(payload))


@dataclass
class Setup:
    """What loading and preparing produced, before the MLflow run exists."""

    model: PreTrainedModel
    """After the method applied: a peft model for adapter methods, the model itself for full fine-tuning."""
    tokenizer: PreTrainedTokenizerBase
    data: PreparedData
    dtype: torch.dtype
    sizes: dict[str, float]
    """Parameter counts (`describe_model`)."""
    ctx: MethodContext
    sink: Sink
    reference: PreTrainedModel | None = None
    """DPO's frozen reference copy, when the objective asked for one."""
    speed: Speed = field(default_factory=lambda: _no_speed())
    lean_off: str = "train.lean_activations is false"
    """Why lean activations are off for this run ("" when on: `oneml.models.lean`)."""
    memory_kept: str = "train.return_memory is false"
    """Why freed CPU memory is kept by malloc for this run ("" when returned: `oneml.train.memory`)."""


def _no_speed() -> Speed:
    from oneml.objectives import Speed

    return Speed()


@dataclass
class RunContext:
    """One run as it executes: what every step after the setup reads, in one typed place."""

    config: RunConfig
    setup: Setup
    device: str
    """Resolved once (`resolve_device`): cpu or cuda."""
    recorder: Any
    """The MLflow recorder (rank 0), or a silent stand-in on the other ranks."""
    uri: str
    run_dir: Path
    """Where the finished run is published."""
    staging: Path
    """Where its files are written first (renamed into run_dir at the end)."""
    ckpt: Path | None
    """The checkpoint folder, when train.save_steps is set."""
    console: Any
    progress: bool
    callbacks: list[Any]
    """The caller's callbacks, the stop-at callback of a paused call, and the run guard."""
    final: bool
    """This call can reach max_steps (a paused one, a halving rung, never touches the test rows)."""
