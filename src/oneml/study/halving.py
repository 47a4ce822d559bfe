"""Successive halving (Jamieson & Talwalkar 2016; Li et al. 2018, arXiv:1603.06560).

Rungs at min_steps * eta^k, then the budget. At each rung every surviving configuration's runs (all seeds)
pause there; configurations are ranked by the metric's mean over seeds, in the metric's own direction (from
the analysis registry, `oneml.analysis.metrics`: eval_loss lower is better, eval_token_accuracy higher), the
best max(1, n // eta) go on and the rest are pruned. A seed that failed or recorded NaN sinks its
configuration whichever the direction. A survivor continues from its checkpoint with the same config, so its
run id, and its final result, are those of an uninterrupted run. Decisions are recomputed from the recorded
rung metrics, so a resumed study makes the same ones, and reports the same ones to ``mark`` (the study records
them on each trial's MLflow run, see `oneml.analysis.rungs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from oneml.errors import OnemlError
from oneml.study.expand import Trial
from oneml.study.spec import RUNG_METRICS, Halving
from oneml.study.state import rung_metrics, state


def rungs(min_steps: int, eta: int, max_steps: int) -> list[int]:
    steps, k = [], 0
    while min_steps * eta**k < max_steps:
        steps.append(min_steps * eta**k)
        k += 1
    return steps + [max_steps]


def ranking_rungs(halving: Halving, max_steps: int) -> list[int]:
    """The rungs that rank configurations (the last rung is the budget, where the survivors finish)."""
    return rungs(halving.min_steps, halving.eta, max_steps)[:-1]


def check_metric(halving: Halving, trials: list[Trial]) -> None:
    """Refuse, before anything runs, a metric some trial's objective does not record at a rung: every one of
    its configurations would score alike and the ranking would be the expansion order."""
    for trial in trials:
        objective = trial.config.objective
        recorded = RUNG_METRICS.get(objective.data_kind)
        if recorded is not None and halving.metric not in recorded:
            raise OnemlError(
                f"halving.metric: {halving.metric} is not recorded by objective {objective.name} (track "
                f"{trial.track}), whose rungs record {', '.join(recorded)}"
            )
    check_evaluations(halving, trials)


def check_evaluations(halving: Halving, trials: list[Trial], where: str = "halving") -> None:
    """With early stopping, every rung must be an evaluation step (min_steps a multiple of train.eval_steps): a rung
    ranks a paused run by the best evaluation early stopping has seen so far (what the run would end on if it ended
    there), and a run continued from the rung must stop where an uninterrupted one would, so the rung cannot add an
    evaluation of its own."""
    for trial in trials:
        train = trial.config.train
        if train.early_stopping is not None and halving.min_steps % train.eval_steps:
            raise OnemlError(
                f"{where}.min_steps: with train.early_stopping (track {trial.track}) the rungs must fall on evaluation "
                f"steps: {halving.min_steps} is not a multiple of train.eval_steps ({train.eval_steps})"
            )


def _value(trial: Trial, step: int, key: str) -> float:
    value = (rung_metrics(trial, step) or {}).get(key)
    return float("nan") if value is None else float(value)


def _score(members: list[Trial], step: int, key: str) -> float:
    """The mean over seeds; NaN when a seed has no value (it failed) or a NaN one."""
    values = [_value(t, step, key) for t in members]
    return math.nan if any(math.isnan(v) for v in values) else sum(values) / len(values)


def _order(score: float, higher_is_better: bool) -> tuple[bool, float]:
    """Sort key, best first: NaN last whatever the direction (a failed seed sinks its configuration)."""
    if math.isnan(score):
        return (True, 0.0)
    return (False, -score if higher_is_better else score)


@dataclass(frozen=True)
class Rung:
    """One trial at one rung: its own value of the metric, its configuration's rank in its track, the decision."""

    index: int
    step: int
    value: float
    rank: int
    of: int
    kept: bool


Execute = Callable[[list[tuple[Trial, int | None]]], None]
Prune = Callable[[Trial, str], None]
Mark = Callable[[Trial, Rung], None]


def run_halving(
    trials: list[Trial], halving: Halving, execute: Execute, prune: Prune, mark: Mark | None = None
) -> list[list[str]]:
    """Run the rungs; returns, per rung, the config ids that went on."""
    groups: dict[tuple[str, str], list[Trial]] = {}
    for trial in trials:
        groups.setdefault(trial.group, []).append(trial)
    max_steps = trials[0].config.train.max_steps
    alive = list(groups)
    history = []
    for k, step in enumerate(rungs(halving.min_steps, halving.eta, max_steps)):
        stop = step if step < max_steps else None
        todo = [(t, stop) for g in alive for t in groups[g] if _needs(t, step)]
        execute(todo)
        if stop is None:
            break
        alive = _cut(alive, groups, k, step, halving, prune, mark or (lambda trial, rung: None))
        history.append([g[1] for g in alive])
    return history


def _needs(trial: Trial, step: int) -> bool:
    return state(trial) not in ("finished", "pruned") and rung_metrics(trial, step) is None


def _cut(alive, groups, k: int, step: int, halving: Halving, prune: Prune, mark: Mark):
    """Keep the best configurations of each track; a track is its own comparison."""
    from oneml.analysis.metrics import metric  # the analysis package loads its report too: only when ranking

    higher = metric(halving.metric).higher_is_better
    survivors = []
    for track in dict.fromkeys(g[0] for g in alive):
        members = [g for g in alive if g[0] == track]
        scores = {g: _score(groups[g], step, halving.metric) for g in members}
        ranked = sorted(members, key=lambda g: _order(scores[g], higher))  # stable: ties keep expansion order
        keep = max(1, len(ranked) // halving.eta)
        survivors += ranked[:keep]
        for i, g in enumerate(ranked, start=1):
            for trial in groups[g]:
                mark(trial, Rung(k, step, _value(trial, step, halving.metric), i, len(ranked), i <= keep))
            if i <= keep:
                continue
            shown = "nan (a seed failed)" if math.isnan(scores[g]) else f"{scores[g]:.4g}"
            reason = f"rung {k} (step {step}): {halving.metric} {shown} ranked {i} of {len(ranked)}"
            for trial in groups[g]:
                prune(trial, reason)
    return survivors
