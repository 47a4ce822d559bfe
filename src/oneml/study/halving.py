"""Successive halving (Jamieson & Talwalkar 2016; Li et al. 2018, arXiv:1603.06560).

Rungs at min_steps * eta^k, then the budget. At each rung every surviving configuration's runs (all seeds)
pause there; configurations are ranked by the metric's mean over seeds (lower is better), the best
max(1, n // eta) go on and the rest are pruned. A survivor continues from its checkpoint with the same config,
so its run id, and its final result, are those of an uninterrupted run. Decisions are recomputed from the
recorded rung metrics, so a resumed study makes the same ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from oneml.study.expand import Trial
from oneml.study.spec import Halving
from oneml.study.state import rung_metrics, state


def rungs(min_steps: int, eta: int, max_steps: int) -> list[int]:
    steps, k = [], 0
    while min_steps * eta**k < max_steps:
        steps.append(min_steps * eta**k)
        k += 1
    return steps + [max_steps]


def _score(members: list[Trial], step: int, metric: str) -> float:
    values = [(rung_metrics(t, step) or {}).get(metric) for t in members]
    if any(v is None or math.isnan(v) for v in values):
        return math.inf  # a failed seed sinks its configuration
    return sum(values) / len(values)


Execute = Callable[[list[tuple[Trial, int | None]]], None]
Prune = Callable[[Trial, str], None]


def run_halving(trials: list[Trial], halving: Halving, execute: Execute, prune: Prune) -> list[list[str]]:
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
        alive = _cut(alive, groups, k, step, halving, prune)
        history.append([g[1] for g in alive])
    return history


def _needs(trial: Trial, step: int) -> bool:
    return state(trial) not in ("finished", "pruned") and rung_metrics(trial, step) is None


def _cut(alive, groups, k: int, step: int, halving: Halving, prune: Prune):
    """Keep the best configurations of each track; a track is its own comparison."""
    survivors = []
    for track in dict.fromkeys(g[0] for g in alive):
        ranked = sorted((g for g in alive if g[0] == track), key=lambda g: _score(groups[g], step, halving.metric))
        keep = max(1, len(ranked) // halving.eta)
        survivors += ranked[:keep]
        for i, g in enumerate(ranked[keep:], start=keep + 1):
            score = _score(groups[g], step, halving.metric)
            reason = f"rung {k} (step {step}): {halving.metric} {score:.4g} ranked {i} of {len(ranked)}"
            for trial in groups[g]:
                prune(trial, reason)
    return survivors
