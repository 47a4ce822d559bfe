"""Per-configuration tuning: each configuration of a study at its own best value of the `tune:` keys.

A comparison at one shared learning rate measures which method suits that learning rate (arXiv 2602.04998 found
LoRA variants within 1-2% of LoRA once each had its own). So, for every configuration (template) of every tuned
track, short tuning runs try each candidate of tune.grid at tune.seeds for tune.budget steps; the candidate with
the best mean of tune.metric over those seeds wins, in the metric's direction (`oneml.analysis.metrics`), and the
configuration's final runs use it with every study seed. Optionally successive halving (`tune.halving`, the same
`oneml.study.halving`) cuts the candidates of each configuration separately.

Selection reads validation rows only: every number it reads goes through `selection_metrics`, which keeps the
eval_* metrics of a run and drops everything else (a run with a test split also records test_*, which is the
final comparison's, never a selection's). A candidate with a failed or NaN seed cannot win (the halving rule);
pruned candidates have no full-budget score and cannot either.

Tuning runs are runs like any other (resumed by run id), tagged ``oneml.tuning=true`` so that the analysis keeps
them out of the comparison (tags: `oneml.analysis.tuning`). A choice is recorded
(``<root>/studies/<study>/tuning/<template id>.json``) and kept while tune: is unchanged, so that a rerun that
retries a failed tuning run cannot move a configuration's value under its finished final runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oneml.errors import OnemlError
from oneml.study.expand import (
    Template,
    Trial,
    budget_steps,
    final_trials,
    is_tuned,
    study_seeds,
    tuning_steps,
    tuning_trials,
)
from oneml.study.spec import RUNG_METRICS, STUDY_KEYS, StudySpec
from oneml.study.state import final_metrics, root_of, state
from oneml.train.checkpoints import read_json, write_json

VALIDATION_PREFIX = "eval_"


def check_tune(spec: StudySpec) -> None:
    """At load: tuned tracks exist, no tune key is also a grid key (or set by the study) of a tuned track, and
    halving inside tuning has a rung before the tuning budget."""
    tune, names = spec.tune, list(spec.tracks)
    for name in tune.tracks or []:
        if name not in spec.tracks:
            raise OnemlError(f"tune.tracks: unknown track {name!r}; tracks: {', '.join(names)}")
    for name in (n for n in names if is_tuned(spec, n)):
        track = spec.tracks[name]
        for key in tune.grid:
            clash = [k for k in track.grid if k == key or k.startswith(key + ".")]
            if clash:
                raise OnemlError(
                    f"tune.grid.{key}: track {name} already sets it in its grid (tracks.{name}.grid.{clash[0]}); "
                    "tune it or grid it, not both"
                )
            if track.from_ is not None and (key == "model" or key.startswith("model.adapter")):
                raise OnemlError(f"tune.grid.{key}: set by tracks.{name}.from, not tunable")
            if any(k.startswith(key + ".") for k in STUDY_KEYS):
                raise OnemlError(f"tune.grid.{key}: holds keys the study sets ({', '.join(STUDY_KEYS)})")
    steps = tune.budget.max_steps if tune.budget else spec.budget.max_steps if spec.budget else None
    if tune.halving and steps is not None and tune.halving.min_steps >= steps:
        raise OnemlError(f"tune.halving.min_steps: must be below the tuning budget ({steps} steps)")


def check_tuning(spec: StudySpec, tuning: list[Trial]) -> None:
    """Before anything runs: the metric is one each tuned objective records, and no final run would replay the
    tuning run that chose its value (a tuning seed that is a study seed, at the study's own budget)."""
    metric = spec.tune.metric
    for trial in tuning:
        recorded = RUNG_METRICS.get(trial.config.objective.data_kind, ())
        if metric not in recorded:
            raise OnemlError(
                f"tune.metric: {metric} is not recorded by objective {trial.config.objective.name} (track "
                f"{trial.track}), which records {', '.join(recorded)}"
            )
    shared = sorted(set(spec.tune.seeds) & set(study_seeds(spec)))
    if tuning and shared and tuning_steps(spec) == budget_steps(spec):
        raise OnemlError(
            f"tune.seeds: seed {shared[0]} is also a study seed and the tuning budget is the study's "
            f"({budget_steps(spec)} steps), so that final run would replay the tuning run that chose its value; "
            "tune on seeds the study does not use, or set a shorter tune.budget"
        )


def selection_metrics(trial: Trial) -> dict[str, float]:
    """A finished run's validation metrics (eval_*), the only numbers any selection reads."""
    metrics = final_metrics(trial) or {}
    return {k: float(v) for k, v in metrics.items() if k.startswith(VALIDATION_PREFIX)}


@dataclass(frozen=True)
class Choice:
    values: dict[str, Any]
    """The winning candidate: tune key -> value."""
    scores: list[tuple[dict[str, Any], float]]
    """Every candidate with its mean over tuning seeds at the tuning budget (NaN: failed, diverged or pruned)."""


def candidate(spec: StudySpec, trial: Trial) -> dict[str, Any]:
    return {k: trial.grid[k] for k in spec.tune.grid}


def choose(spec: StudySpec, trials: list[Trial]) -> Choice | None:
    """The best candidate among one configuration's tuning trials; None when none has a score."""
    from oneml.analysis.metrics import metric
    from oneml.study.halving import _order  # one sort key for "best first, NaN last" in every selection

    higher = metric(spec.tune.metric).higher_is_better
    by_candidate: dict[str, tuple[dict[str, Any], list[Trial]]] = {}
    for trial in trials:
        values = candidate(spec, trial)
        by_candidate.setdefault(repr(sorted(values.items())), (values, []))[1].append(trial)
    scores = [(values, _score(spec, members)) for values, members in by_candidate.values()]
    ranked = sorted(scores, key=lambda item: _order(item[1], higher))  # stable: ties keep the grid order
    if not ranked or math.isnan(ranked[0][1]):
        return None
    return Choice(ranked[0][0], scores)


def _score(spec: StudySpec, members: list[Trial]) -> float:
    values = [
        selection_metrics(t).get(spec.tune.metric, math.nan) if state(t) == "finished" else math.nan for t in members
    ]
    return math.nan if any(math.isnan(v) for v in values) else sum(values) / len(values)


def _record(spec: StudySpec, tpl: Template, root: Path) -> Path:
    return root / "studies" / spec.name / "tuning" / f"{tpl.template_id}.json"


def _settings(spec: StudySpec) -> dict[str, Any]:
    return spec.tune.model_dump(mode="json", exclude={"tracks"})


def recorded_choice(spec: StudySpec, tpl: Template, root: Path) -> dict[str, Any] | None:
    saved = read_json(_record(spec, tpl, root))
    return saved["values"] if saved and saved.get("settings") == _settings(spec) else None


Phase = Callable[[list[Trial], Any], list[list[str]]]
Tag = Callable[[Trial, dict[str, str]], None]


def run_tuning(spec: StudySpec, tpls: list[Template], phase: Phase, tag: Tag) -> tuple[dict[str, dict], list[Trial]]:
    """Tune every template (those chosen earlier are kept); returns (template id -> chosen values, the trials)."""
    from oneml.analysis.tuning import chosen_tags

    everything = [t for tpl in tpls for t in tuning_trials(spec, tpl)]
    root = {tpl.template_id: root_of(next(t for t in everything if t.tuning == tpl.template_id)) for tpl in tpls}
    choices = {tpl.template_id: recorded_choice(spec, tpl, root[tpl.template_id]) for tpl in tpls}
    todo = [tpl for tpl in tpls if choices[tpl.template_id] is None]
    trials = [t for t in everything if t.tuning in {tpl.template_id for tpl in todo}]
    if trials:
        phase(trials, spec.tune.halving)
    for tpl in todo:
        members = [t for t in trials if t.tuning == tpl.template_id]
        choice = choose(spec, members)
        if choice is None:  # every candidate failed: its final runs wait, and a rerun tries again
            continue
        final_id = final_trials(spec, tpl, choice.values)[0].config.config_id
        for trial in members:
            tag(trial, chosen_tags(final_id, candidate(spec, trial) == choice.values))
        scores = [{"values": v, "score": s} for v, s in choice.scores]
        write_json(
            _record(spec, tpl, root[tpl.template_id]),
            {"settings": _settings(spec), "values": choice.values, "scores": scores},
        )
        choices[tpl.template_id] = choice.values
    return {k: v for k, v in choices.items() if v is not None}, everything
