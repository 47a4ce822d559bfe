"""Fault injection for the crash tests, and nothing else: ``ONEML_FAULT=<point>:<n>`` makes the process
SIGKILL itself the n-th time it reaches ``<point>`` (one of POINTS).

Why this lives in the product code: a kill -9 test must die at exact moments *inside* a run (halfway through a
checkpoint save, between two MLflow writes) of the unmodified command a user would rerun; a ``kill`` from
outside cannot hit those windows reliably. Unset, as it always is outside tests, it costs one lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "ONEML_FAULT"
POINTS = ("prepare", "eval", "step", "checkpoint", "mlflow")
"""prepare: data prepared, before the MLflow run is touched; eval: the evaluation before training recorded, no
step taken; step: after the backward pass, before the optimizer step; checkpoint: a checkpoint written to its
temporary folder, not yet renamed; mlflow: the artifacts uploaded, the run neither published nor marked FINISHED."""

_passes: dict[str, int] = {}


def fault(point: str) -> None:
    spec = os.environ.get(ENV)
    if not spec or spec.partition(":")[0] != point:
        return
    _passes[point] = _passes.get(point, 0) + 1
    if _passes[point] == int(spec.partition(":")[2] or 1):
        os.kill(os.getpid(), signal.SIGKILL)
