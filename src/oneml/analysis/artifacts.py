"""Reading the methods' diagnostics artifacts (``diagnostics/*.json``) into plottable arrays.

The AdaLoRA rank matrix has a fixed layout: ``{"layers": [...], "steps": [...], "matrix": [[...]]}``,
one row per layer, one column per step. Trajectories (DoRA magnitude and direction in ``dora.json``,
condition numbers in ``kappa.json``: each a layer x step matrix beside ``steps`` and ``layers``) are read
leniently, since their writers evolve: a ``steps`` list next to series that are either one number per
step, a layer x step (or step x layer) matrix, or a mapping of layer name to one number per step; or a
list of records ``[{"step": 10, "magnitude": ..., ...}]``. A matrix becomes its median over layers with
the layers' range as a band; null (undefined) values are gaps. Anything else is "an unknown layout",
never an exception.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RankMatrix:
    layers: list[str]
    steps: list[int]
    matrix: np.ndarray
    """(layers, steps)"""


def rank_matrices(payload: Any) -> RankMatrix | None:
    if not isinstance(payload, dict):
        return None
    layers, steps, matrix = payload.get("layers"), payload.get("steps"), payload.get("matrix")
    try:
        array = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError):
        return None
    if not isinstance(layers, list) or not isinstance(steps, list) or array.ndim != 2 or array.size == 0:
        return None
    if array.shape == (len(steps), len(layers)) and len(steps) != len(layers):
        array = array.T  # written step-major
    if array.shape != (len(layers), len(steps)):
        return None
    return RankMatrix([_short_layer(str(x)) for x in layers], [int(s) for s in steps], array)


def _short_layer(name: str) -> str:
    """``base_model.model.model.layers.3.self_attn.q_proj`` -> ``3.self_attn.q_proj``."""
    for marker in ("layers.", "h.", "blocks."):
        if marker in name:
            return name[name.rindex(marker) + len(marker) :]
    return name


@dataclass(frozen=True)
class Trajectory:
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None


def trajectories(payload: Any) -> dict[str, Trajectory]:
    """Named series over steps found in ``payload``; empty when its layout is unknown."""
    if isinstance(payload, list) and payload and all(isinstance(r, dict) and "step" in r for r in payload):
        columns: dict[str, list[Any]] = {}
        for record in payload:
            for k, v in record.items():
                columns.setdefault(k, []).append(v)
        payload = {**columns, "steps": columns.pop("step")}
    if not isinstance(payload, dict) or not isinstance(payload.get("steps"), list) or not payload["steps"]:
        return {}
    try:
        steps = np.asarray(payload["steps"], dtype=float)
    except (TypeError, ValueError):
        return {}
    out = {}
    for name, value in payload.items():
        if name in ("steps", "layers"):
            continue
        series = _series(value, len(steps))
        if series is not None:
            out[name] = _trajectory(steps, series)
    return out


def _series(value: Any, n_steps: int) -> np.ndarray | None:
    """A (steps,) or (layers, steps) array from one payload entry, or None."""
    if isinstance(value, dict):
        rows = [_series(v, n_steps) for v in value.values()]
        rows = [r for r in rows if r is not None and r.ndim == 1]
        return np.vstack(rows) if rows else None
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    if array.ndim == 1 and len(array) == n_steps:
        return array
    if array.ndim == 2 and array.shape[1] == n_steps:
        return array
    if array.ndim == 2 and array.shape[0] == n_steps:
        return array.T
    return None


def _trajectory(steps: np.ndarray, series: np.ndarray) -> Trajectory:
    """The median over layers (one ill-conditioned layer must not hide the others) and the layers' range."""
    series = np.where(np.isfinite(series), series, np.nan)  # null (undefined) and infinite values are gaps
    if series.ndim == 1:
        return Trajectory(steps, series, None, None)
    with warnings.catch_warnings():  # a step where every layer is undefined stays a gap
        warnings.simplefilter("ignore", RuntimeWarning)
        return Trajectory(steps, np.nanmedian(series, axis=0), np.nanmin(series, axis=0), np.nanmax(series, axis=0))
