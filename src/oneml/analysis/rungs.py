"""Successive halving as evidence: which configurations each rung kept, and on what numbers.

A study with halving compares only its survivors at the end, and chose them on the validation rows its final
numbers are measured on, so the report has to show the rungs and say so. The study records (study/run.py):

- on its parent run: ``oneml.halving.min_steps``, ``oneml.halving.eta``, ``oneml.halving.metric`` and
  ``oneml.halving.rungs`` (the steps at which configurations were ranked, comma-separated; the budget, where
  the survivors finish, is not a rung);
- on each trial's run, for every rung S it reached: ``oneml.rung.S.value`` (the run's own value of the metric
  there, ``nan`` for a failed seed), ``oneml.rung.S.rank`` and ``oneml.rung.S.of`` (its configuration's rank
  in its track, 1 = best, among how many), ``oneml.rung.S.decision`` (``kept`` or ``pruned``).

Tags rather than MLflow metrics: a resumed study sets them again with the same values, which overwrites them,
where a metric logged again at the same step would add a second point to its history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from oneml.analysis.metrics import metric
from oneml.analysis.results import StudyResults, _configurations
from oneml.analysis.stats import summarize
from oneml.analysis.tables import Table
from oneml.tracking.tags import HALVING_PREFIX, RUNG_PREFIX

KEPT, PRUNED = "kept", "pruned"


def halving_tags(min_steps: int, eta: int, metric_key: str, steps: list[int]) -> dict[str, str]:
    """The parent run's tags: the settings and the steps of the rungs that ranked configurations."""
    settings = {"min_steps": str(min_steps), "eta": str(eta), "metric": metric_key}
    settings["rungs"] = ",".join(str(s) for s in steps)
    return {HALVING_PREFIX + k: v for k, v in settings.items()}


def rung_tags(step: int, value: float, rank: int, of: int, kept: bool) -> dict[str, str]:
    """One trial run's tags for one rung (``value`` is the run's own, NaN when it failed)."""
    fields = {"value": repr(float(value)), "rank": str(rank), "of": str(of), "decision": KEPT if kept else PRUNED}
    return {f"{RUNG_PREFIX}{step}.{k}": v for k, v in fields.items()}


@dataclass(frozen=True)
class Setup:
    min_steps: int
    eta: int
    metric: str
    steps: list[int]


def setup(study: StudyResults) -> Setup | None:
    """The halving settings the study recorded; None without halving, or when no rung came before the budget."""
    tags = study.parent_tags
    try:
        steps = [int(s) for s in tags[HALVING_PREFIX + "rungs"].split(",") if s.strip()]
        found = Setup(
            int(tags[HALVING_PREFIX + "min_steps"]),
            int(tags[HALVING_PREFIX + "eta"]),
            tags[HALVING_PREFIX + "metric"],
            steps,
        )
    except (KeyError, ValueError):
        return None
    return found if found.steps else None


@dataclass
class _Entry:
    """One configuration at one rung."""

    config_id: str
    track: str
    values: list[float]
    rank: int
    of: int
    decision: str


def _entries(study: StudyResults, step: int) -> list[_Entry]:
    """Configurations ranked at ``step``, one value per seed: a seed's survivor run first, then the newest other."""
    entries: dict[str, _Entry] = {}
    seen: set[tuple[str, str]] = set()
    tag = f"{RUNG_PREFIX}{step}."
    for run in study.runs + study.excluded:  # excluded runs are newest first, as searched
        if tag + "decision" not in run.tags or (run.config_id, run.seed) in seen:
            continue
        seen.add((run.config_id, run.seed))
        try:
            value, rank, of = float(run.tags[tag + "value"]), int(run.tags[tag + "rank"]), int(run.tags[tag + "of"])
        except (KeyError, ValueError):
            continue  # a hand-edited or foreign tag: the row shows the seeds that are readable
        entry = entries.setdefault(
            run.config_id, _Entry(run.config_id, run.track, [], rank, of, run.tags[tag + "decision"])
        )
        entry.values.append(value)
    return sorted(entries.values(), key=lambda e: (e.track, e.rank))


def _labels(study: StudyResults) -> dict[str, str]:
    """Survivors keep the report's labels; pruned configurations are labelled the same way (method + grid)."""
    labels = {c.config_id: c.label for c in study.configs}
    others = [r for r in study.excluded if r.config_id not in labels and any(k.startswith(RUNG_PREFIX) for k in r.tags)]
    if others:
        taken = set(labels.values())
        for c in _configurations(others, study.source):
            labels[c.config_id] = f"{c.label} [{c.config_id[:6]}]" if c.label in taken else c.label
    return labels


def _cell(values: list[float], key: str) -> tuple[str, str]:
    """(mean [95% CI], n) over the seeds that have a value; a failed seed is counted beside n."""
    finite = [v for v in values if math.isfinite(v)]
    failed = len(values) - len(finite)
    n = str(len(finite)) + (f" ({failed} failed)" if failed else "")
    if not finite:
        return "-", n
    s, m = summarize(finite), metric(key)
    interval = f" [{m.show(s.ci_low)}, {m.show(s.ci_high)}]" if s.n > 1 and math.isfinite(s.ci_low) else ""
    return m.show(s.mean) + interval, n


def rung_table(study: StudyResults) -> Table | None:
    """Every rung: each configuration's rung mean with its 95% t interval, its rank and whether it went on."""
    found = setup(study)
    if found is None:
        return None
    m, labels = metric(found.metric), _labels(study)
    per_step = [(k, step, _entries(study, step)) for k, step in enumerate(found.steps)]
    tracks = len({e.track for _, _, entries in per_step for e in entries}) > 1
    columns = ["rung", "step"] + (["track"] if tracks else []) + ["configuration", f"{m.label} mean [95% CI]", "n"]
    columns += ["rank", "decision"]
    rows, classes = [], []
    for k, step, entries in per_step:
        for e in entries:
            cell, n = _cell(e.values, found.metric)
            label = labels.get(e.config_id, e.config_id)
            rows.append(
                [str(k), str(step)]
                + ([e.track] if tracks else [])
                + [label, cell, n, f"{e.rank} of {e.of}", e.decision]
            )
            classes.append("contender" if e.decision == KEPT else "worse")
    caption = (
        f"Successive halving ranked the configurations of each track by {m.label} "
        f"({'higher' if m.higher_is_better else 'lower'} is better), mean over seeds with a 95% t interval "
        f"(none at n=1); the best 1/{found.eta} went on at each rung, and a failed seed sank its configuration. "
        "The rungs read the validation rows the final results are also measured on."
    )
    return Table("rungs", "Successive halving: the rungs", columns, rows, classes, caption)


def halving_note(study: StudyResults) -> str | None:
    """One sentence for the report's warnings: the final comparison is among survivors halving selected."""
    found = setup(study)
    if found is None:
        return None
    m = metric(found.metric)
    decisions: dict[str, set[str]] = {}
    for step in found.steps:
        for e in _entries(study, step):
            decisions.setdefault(e.config_id, set()).add(e.decision)
    total = len(decisions.keys() | {c.config_id for c in study.configs})
    pruned = sum(PRUNED in d for d in decisions.values())
    plural = "s" if len(found.steps) > 1 else ""
    steps = ", ".join(str(s) for s in found.steps)
    return (
        f"Successive halving (eta {found.eta}, rung{plural} at step{plural} {steps}; ranked by {m.label}, "
        f"{'higher' if m.higher_is_better else 'lower'} is better) pruned {pruned} of {total} configurations: "
        "the final comparison is among the survivors, selected on the same validation rows it is reported on."
    )
