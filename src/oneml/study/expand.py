"""Expansion: tracks x grid x seeds -> resolved RunConfigs, every one validated before anything runs."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from oneml.config import RunConfig, apply_overrides, resolve
from oneml.errors import OnemlError
from oneml.study.spec import StudySpec


@dataclass(frozen=True)
class Trial:
    track: str
    grid: dict[str, Any]
    seed: int
    config: RunConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def group(self) -> tuple[str, str]:
        """The configuration this trial is one seed of (halving ranks these)."""
        return self.track, self.config.config_id

    @property
    def label(self) -> str:
        grid = ", ".join(f"{k}={_label(v)}" for k, v in self.grid.items())
        return f"{self.track}[{grid}] seed {self.seed}"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """`method: lora` is shorthand for `method: {name: lora}`; merging needs the long form."""
    return {k: {"name": v} if k in ("method", "objective") and isinstance(v, str) else v for k, v in data.items()}


def _label(value: Any) -> str:
    """A grid value as a tag: a whole section (`method: {name: pissa, use_dora: true}`) reads name=pissa,..."""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def budget_steps(spec: StudySpec) -> int:
    return spec.budget.max_steps if spec.budget else resolve(_normalise(spec.base)).train.max_steps


def _trial(spec: StudySpec, track: str, base: dict[str, Any], grid: dict[str, Any], seed: int) -> Trial:
    steps = budget_steps(spec)
    settings = {
        "train.max_steps": steps,
        "train.seed": seed,
        "train.save_steps": spec.save_steps or max(1, steps // 4),
    } | grid
    tags = {"oneml.study": spec.name, "oneml.track": track} | {f"oneml.grid.{k}": _label(v) for k, v in grid.items()}
    where = f"study {spec.name}, track {track}" + "".join(f", {k}={v}" for k, v in grid.items())
    try:
        data = apply_overrides(base, [f"{k}={json.dumps(v)}" for k, v in settings.items()])
        data.setdefault("tracking", {})
        data["tracking"]["tags"] = {**data["tracking"].get("tags", {}), **tags}
        return Trial(track, dict(grid), seed, resolve(data))
    except OnemlError as err:
        raise OnemlError(f"{where}: {err}") from None


def expand(spec: StudySpec) -> list[Trial]:
    """Every trial of the study, in a stable order (track, grid, seed); raises on the first invalid one."""
    trials = []
    for track_name, track in spec.tracks.items():
        base = _merge(_normalise(spec.base), _normalise(track.base))
        keys = list(track.grid)
        for values in itertools.product(*(track.grid[k] for k in keys)):
            for seed in spec.seeds:
                trials.append(_trial(spec, track_name, base, dict(zip(keys, values, strict=True)), seed))
    ids = [t.run_id for t in trials]
    if len(set(ids)) != len(ids):
        raise OnemlError(f"study {spec.name}: two trials resolve to the same run config (a grid value repeats?)")
    return trials
