"""Expansion: tracks x grid x seeds -> resolved RunConfigs, every one validated before anything runs.

A *template* is one configuration as its track defines it: a grid point, and for a stage (`from:`) the run it
starts from. Two things become known only while the study runs, and expansion takes them as given (`Known`): a
stage's source run (set as model.adapter) and a tuned configuration's chosen values (`tune:`). Before they are
known every trial is still resolved, with a placeholder source or the base values, and marked provisional: that
validates the whole study before anything runs, and a provisional trial is never run.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from oneml.config import RunConfig, apply_overrides, resolve
from oneml.errors import OnemlError
from oneml.study.spec import StudySpec
from oneml.tracking import tags as tags_

PENDING = "pending-"
"""Prefix of a placeholder source run id: the stage's source has not been picked yet."""
FROM_TRACK, FROM_RUN, FROM_CONFIG = tags_.FROM_TRACK, tags_.FROM_RUN, tags_.FROM_CONFIG


@dataclass(frozen=True)
class Trial:
    track: str
    grid: dict[str, Any]
    """What tells this trial apart in its track, for labels: the grid point (and its tuning candidate)."""
    seed: int
    config: RunConfig
    tuning: str = ""
    """For a tuning trial, the template id of the configuration it tunes; empty for a final trial."""
    provisional: bool = False
    """Expanded before its source or tuned value was known: for validation and display, never run."""

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def group(self) -> tuple[str, str]:
        """The configuration this trial is one seed of, and the comparison it is ranked in (halving cuts within
        one first element): its track, or for a tuning trial the candidates of the one configuration it tunes."""
        scope = f"{self.track}/tuning/{self.tuning}" if self.tuning else self.track
        return scope, self.config.config_id

    @property
    def label(self) -> str:
        grid = ", ".join(f"{k}={_label(v)}" for k, v in self.grid.items())
        return f"{self.track}[{grid}]{' tuning' if self.tuning else ''} seed {self.seed}"


@dataclass(frozen=True)
class Source:
    """The run a stage starts from (its model.adapter) and the source configuration it is a seed of."""

    track: str
    run_id: str
    config_id: str
    label: str
    """The source configuration in words (its track and grid), which tells `pick: each` stages apart."""


@dataclass
class Known:
    """What the study has decided so far: stage sources by track, chosen values by template id."""

    sources: dict[str, list[Source]] = field(default_factory=dict)
    choices: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Template:
    """One configuration before tuning; `template_id` is its config id with the tuned keys at their base values."""

    track: str
    grid: dict[str, Any]
    source: Source | None
    base: dict[str, Any]
    template_id: str
    provisional: bool = False


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


def tuning_steps(spec: StudySpec) -> int:
    """Steps of a tuning run: tune.budget, else the study's budget."""
    return spec.tune.budget.max_steps if spec.tune and spec.tune.budget else budget_steps(spec)


def study_seeds(spec: StudySpec) -> list[int]:
    return list(spec.seeds)


def is_tuned(spec: StudySpec, track: str) -> bool:
    return spec.tune is not None and (spec.tune.tracks is None or track in spec.tune.tracks)


def track_base(spec: StudySpec, track: str) -> dict[str, Any]:
    return _merge(_normalise(spec.base), _normalise(spec.tracks[track].base))


def grid_points(spec: StudySpec, track: str) -> list[dict[str, Any]]:
    grid = spec.tracks[track].grid
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def _build(spec: StudySpec, tpl: Template, seed: int, steps: int, values: dict[str, Any], tags: dict[str, str]):
    """The resolved RunConfig of one trial: study settings, then the grid point, its source, the tuned values (and
    the settings of a tuning run)."""
    settings = {"train.max_steps": steps, "train.seed": seed, "train.save_steps": spec.save_steps or max(1, steps // 4)}
    settings |= tpl.grid | ({"model.adapter": tpl.source.run_id} if tpl.source else {}) | values
    every = {tags_.STUDY: spec.name, tags_.TRACK: tpl.track} | {
        f"{tags_.GRID_PREFIX}{k}": _label(v) for k, v in tpl.grid.items()
    }
    data = apply_overrides(tpl.base, [f"{k}={json.dumps(v)}" for k, v in settings.items()])
    data.setdefault("tracking", {})
    data["tracking"]["tags"] = {**data["tracking"].get("tags", {}), **every, **_source_tags(spec, tpl), **tags}
    return resolve(data)


def _source_tags(spec: StudySpec, tpl: Template) -> dict[str, str]:
    """A stage's runs name their source; under `pick: each` the source also tells the configurations apart."""
    if tpl.source is None:
        return {}
    tags = {FROM_TRACK: tpl.source.track, FROM_RUN: tpl.source.run_id, FROM_CONFIG: tpl.source.config_id}
    if spec.tracks[tpl.track].from_.pick == "each":
        tags[f"{tags_.GRID_PREFIX}from"] = tpl.source.label
    return tags


def _where(spec: StudySpec, track: str, grid: dict[str, Any], extra: str = "") -> str:
    return f"study {spec.name}, track {track}" + "".join(f", {k}={v}" for k, v in grid.items()) + extra


def make_trial(
    spec: StudySpec,
    tpl: Template,
    seed: int,
    *,
    steps: int | None = None,
    values: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    tuning: str = "",
    provisional: bool = False,
) -> Trial:
    values = values or {}
    steps = steps or budget_steps(spec)
    shown = tpl.grid | ({"from": tpl.source.label} if tpl.source and _each(spec, tpl.track) else {}) | values
    # Nothing loads a tuning run's model: it keeps none (a full fine-tune's would be the size of the model).
    hidden = {"train.save_adapter": False} if tuning else {}
    try:
        config = _build(spec, tpl, seed, steps, values | hidden, tags or {})
    except OnemlError as err:
        extra = "".join(f", tune.grid {k}={v}" for k, v in values.items()) if tuning else ""
        raise OnemlError(f"{_where(spec, tpl.track, tpl.grid, extra)}: {err}") from None
    return Trial(tpl.track, shown, seed, config, tuning, provisional or tpl.provisional)


def _each(spec: StudySpec, track: str) -> bool:
    source = spec.tracks[track].from_
    return source is not None and source.pick == "each"


def templates(spec: StudySpec, track: str, known: Known) -> list[Template]:
    """The track's configurations: grid points x its sources (placeholders while the sources are not picked)."""
    sources: list[Source | None] = [None]
    provisional = False
    if spec.tracks[track].from_ is not None:
        sources, provisional = (
            (known.sources[track], False) if track in known.sources else (_pending(spec, track), True)
        )
    base = track_base(spec, track)
    out = []
    for grid in grid_points(spec, track):
        for source in sources:
            tpl = Template(track, grid, source, base, "", provisional)
            try:
                config = _build(spec, tpl, study_seeds(spec)[0], budget_steps(spec), {}, {})
            except OnemlError as err:
                raise OnemlError(f"{_where(spec, track, grid)}: {err}") from None
            out.append(Template(track, grid, source, base, config.config_id, provisional))
    return out


def _pending(spec: StudySpec, track: str) -> list[Source]:
    """Placeholder sources: one for `pick: best`, one per source configuration for `pick: each`."""
    source = spec.tracks[track].from_
    if source.pick == "best":
        return [Source(source.track, f"{PENDING}{source.track}", "", source.track)]
    points = grid_points(spec, source.track)
    return [
        Source(source.track, f"{PENDING}{source.track}-{i}", "", source_label(source.track, p))
        for i, p in enumerate(points)
    ]


def source_label(track: str, grid: dict[str, Any]) -> str:
    return f"{track}:" + ",".join(f"{k.rsplit('.', 1)[-1]}={_label(v)}" for k, v in grid.items()) if grid else track


def final_trials(spec: StudySpec, tpl: Template, chosen: dict[str, Any] | None) -> list[Trial]:
    """A configuration's runs at every study seed, with its chosen values when tuned (base values until then)."""
    tuned = is_tuned(spec, tpl.track)
    tags = {}
    if tuned and chosen is not None:
        from oneml.analysis.tuning import final_tags

        tags = final_tags(tpl.template_id, {k: _label(v) for k, v in chosen.items()})
    provisional = tuned and chosen is None
    values = chosen if tuned and chosen else {}
    return [make_trial(spec, tpl, s, values=values, tags=tags, provisional=provisional) for s in study_seeds(spec)]


def tuning_trials(spec: StudySpec, tpl: Template) -> list[Trial]:
    """A configuration's tuning runs: every candidate of tune.grid x tune.seeds at the tuning budget, tagged so that
    the comparison leaves them out."""
    from oneml.analysis.tuning import tuning_tags

    tune = spec.tune
    keys = list(tune.grid)
    trials = []
    for values in itertools.product(*(tune.grid[k] for k in keys)):
        candidate = dict(zip(keys, values, strict=True))
        tags = tuning_tags(tpl.template_id, {k: _label(v) for k, v in candidate.items()})
        for seed in tune.seeds:
            trials.append(
                make_trial(
                    spec,
                    tpl,
                    seed,
                    steps=tuning_steps(spec),
                    values=candidate,
                    tags=tags,
                    tuning=tpl.template_id,
                )  # fmt: skip
            )
    return trials


def expand(spec: StudySpec, known: Known | None = None) -> list[Trial]:
    """Every final trial of the study, in a stable order (track, grid, source, seed); raises on the first invalid
    trial, tuning ones included (see `plan`). Without `known`, the trials of stages and tuned configurations are
    provisional."""
    return plan(spec, known)[1]


def plan(spec: StudySpec, known: Known | None = None) -> tuple[list[Trial], list[Trial]]:
    """(tuning trials, final trials) as far as `known` decides them, every config validated and the stages and the
    tuning checked: everything a run of the study refuses before it starts."""
    from oneml.study.stages import check_stages  # both import this module
    from oneml.study.tune import check_tuning

    known = known or Known()
    finals, tuning = [], []
    for track in spec.tracks:
        for tpl in templates(spec, track, known):
            finals += final_trials(spec, tpl, known.choices.get(tpl.template_id))
            tuning += tuning_trials(spec, tpl) if is_tuned(spec, track) else []
    unique(spec, finals, "a grid value repeats?")
    unique(spec, tuning, "a tune.grid value repeats?")
    if spec.tune is not None:
        check_tuning(spec, tuning)
    check_stages(spec, finals)
    return tuning, finals


def unique(spec: StudySpec, trials: list[Trial], hint: str) -> list[Trial]:
    ids = [t.run_id for t in trials]
    if len(set(ids)) != len(ids):
        raise OnemlError(f"study {spec.name}: two trials resolve to the same run config ({hint})")
    return trials
