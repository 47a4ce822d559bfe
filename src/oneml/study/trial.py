"""One trial, wherever it runs (this process, a worker process, a Ray task): a deterministic function of
its config. Any failure becomes an outcome with a reason, so that one bad trial never stops a study."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from oneml.distributed.devices import GPU_FRACTION_ENV


@dataclass
class Job:
    config: dict[str, Any]
    """The resolved run config (plain data, so that it crosses process boundaries)."""
    stop_at: int | None = None
    """Pause at this step (a halving rung); None runs to the budget."""
    label: str = ""


@dataclass
class Outcome:
    run_id: str
    status: str
    """finished, paused (at a rung) or failed."""
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    steps_trained: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _limit_gpu_memory() -> None:
    """Several trials share one GPU: each may only take its share of the memory, its CUDA context included."""
    fraction = os.environ.get(GPU_FRACTION_ENV)
    if not fraction:
        return
    import torch

    from oneml.distributed.devices import allocator_fraction

    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        torch.cuda.set_per_process_memory_fraction(allocator_fraction(float(fraction), total))


def run_trial(config: dict[str, Any], stop_at: int | None = None) -> dict[str, Any]:
    from rich.console import Console

    from oneml.config import resolve
    from oneml.train import train

    cfg = resolve(config)
    try:
        _limit_gpu_memory()
        result = train(cfg, progress=False, console=Console(stderr=True, quiet=True), stop_at=stop_at)
    except Exception as err:  # NaN, OOM, a bad value found at run time: recorded, and the study goes on
        text = str(err).splitlines()[0][:500] if str(err) else ""
        return Outcome(cfg.run_id, "failed", reason=f"{type(err).__name__}: {text}".rstrip(": ")).to_dict()
    status = "finished" if result.complete else "paused"
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float)}
    return Outcome(cfg.run_id, status, metrics, steps_trained=result.steps_trained).to_dict()
