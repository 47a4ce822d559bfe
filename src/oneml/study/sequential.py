"""Sequential seeds: a study run in rounds, each adding seeds only where the decision guide still needs them.

`seeds: {initial: 3, max: 10, until: decided}`. Round 1 runs every configuration with seeds start ..
start+initial-1. After each round the guide looks at the study's own recorded results (`load_study`,
`analyse_study`, `decision_table`), judging at the share of alpha this look spends (O'Brien-Fleming alpha
spending, analysis/sequential.py), and sorts its rows:

- decided, or `none` (nothing to choose from): closed;
- inconclusive and *open*: a look at some count n <= max could decide it. A look at n would judge at its own
  share, alpha*(n/max) - alpha*(now/max); n decides the row when the row is decided at that share on the results
  so far, or its seeds_needed there (80% power at the observed spread) is at most n;
- inconclusive and *futile*: no count up to max would. Stopping there adds no error (a look not taken cannot
  give a false verdict) and saves what a fixed design spends on a question its budget cannot answer.

The next round adds seeds to the configurations named in the candidates of an open row (those the row cannot
separate: its leading configuration and every undecided one; for stability and convergence also the contenders
their own tests could not separate) and to no other, so a configuration already decided worse or equivalent
costs nothing more. Rounds stop when no row is open (`decided` when none is inconclusive, else `futile`) or at
max (`max`).

The step: `step: planned` (the default) goes straight to the smallest count that settles every open row (the
largest of their needs), `step: N` adds N per round. On the benchmark's tiny-model studies (BENCHMARKS.md,
"Sequential seeds") both spend the same compute, but planned gets there in 2-3 looks instead of 3-7: every look
is paid for in alpha, and after many small looks O'Brien-Fleming spending leaves the last one a thin share (one
seed per round from 3 to 10 judges its last look at 0.011; 3 then 10 at 0.050), so the final verdicts of a
planned study are judged at a larger level, with more power.

Every configuration's seeds are a prefix start, start+1, ..., so two configurations with the same count pair.
Running again is resuming: the plan (the seeds of every configuration, the looks so far) is the study journal's
`seeds.json`, written before each round runs, so a killed round continues with the same trials and the same
results give the same looks. A trial that failed before a look is not retried by later rounds (that look
counted its failure). The parent run records the looks (`oneml.sequential.*`, read by the report).

`extend_study` adds seeds by hand (`oneml study extend`): to a seed list (uncorrected, and tagged so that the
report says so) or, once the rounds have stopped, as one more look of a sequential study.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from oneml.analysis.decision import DEFAULT_ALPHA
from oneml.analysis.sequential import EXTENDED_TAG, look_share, look_tags
from oneml.errors import OnemlError
from oneml.study.expand import Trial, expand
from oneml.study.run import StudyResult, run_study
from oneml.study.spec import SequentialSeeds, StudySpec
from oneml.study.state import root_of, state
from oneml.tracking import layout
from oneml.tracking import tags as tag
from oneml.train.checkpoints import read_json, write_json

ALPHA = DEFAULT_ALPHA
"""The overall level the looks share (the guide's default)."""
JOURNAL = "seeds.json"


@dataclass
class SequentialResult(StudyResult):
    looks: list[dict[str, Any]] = field(default_factory=list)
    """One entry per look: seeds, share (its level), open (rows still open), configs (how many got seeds), next."""
    stopped: str = ""
    """decided, futile, max or 'no finished run' (empty while rounds remain)."""


@dataclass(frozen=True)
class OpenRow:
    group: tuple[str, str, str]
    priority: str
    need: int
    """Seeds per configuration that would decide it (at the level of a last look at max)."""
    config_ids: tuple[str, ...]


def journal_path(spec: StudySpec, first: Trial) -> Path:
    from oneml.paths import confined

    return confined(root_of(first) / layout.STUDIES, spec.name, "name") / JOURNAL


def read_plan(spec: StudySpec, first: Trial) -> dict[str, Any]:
    """The journal's plan (a fresh one before the first round). Sequential settings that fix the looks' shares
    (initial, max, start) cannot change once a round has run: the spent alpha was computed with them."""
    seq = spec.seeds if isinstance(spec.seeds, SequentialSeeds) else None
    fresh = {"configs": [], "counts": {}, "looked": {}, "round": seq.initial if seq else 0, "looks": [], "stopped": ""}
    plan = fresh | {"extended": [], "pending": None} | (read_json(journal_path(spec, first)) or {})
    if seq is not None:
        settings = {"initial": seq.initial, "max": seq.max, "start": seq.start}
        ran = plan.setdefault("settings", settings)
        if plan["configs"] and ran != settings:
            was = ", ".join(f"{k}: {v}" for k, v in ran.items())
            raise OnemlError(
                f"seeds: study {spec.name} ran its rounds with {{{was}}}; changing them would void the error rate "
                f"its looks spent (restore them, or name a new study)"
            )
    return plan


def save_plan(spec: StudySpec, first: Trial, plan: dict[str, Any]) -> None:
    write_json(journal_path(spec, first), plan)


def run_sequential(spec: StudySpec, executor=None, options=None, console=None, progress=True) -> SequentialResult:
    """Rounds until the guide is decided, no open row is left, or max (see the module docstring)."""
    first = expand(spec)[0]  # every configuration of the first round validated before anything runs
    plan = read_plan(spec, first)
    say = console.print if console is not None and progress else (lambda *a, **k: None)
    states: dict[str, str] = {}
    spent, trials, evaluated = 0, {}, {}
    while True:
        if not plan["stopped"]:
            say(_round_text(spec, plan), markup=False, highlight=False)
        result = run_round(spec, first, plan, executor, options, console, progress)
        spent += result.steps_trained
        states |= result.states
        trials |= {t.run_id: t for t in result.trials}
        evaluated |= result.evaluated
        if plan["stopped"]:  # resumed after the last look: the rounds are over
            break
        look(spec, first, plan)
        say(_look_text(spec, plan), markup=False, highlight=False)
        if plan["stopped"]:
            break
    record(spec, first, plan, states)
    return SequentialResult(
        list(trials.values()), states, spent, evaluated=evaluated, looks=plan["looks"], stopped=plan["stopped"]
    )


def _counts(spec: StudySpec, plan: dict[str, Any]) -> dict[str, int]:
    """Seeds of every configuration in the current round (before the first look: the initial seeds)."""
    return {cid: plan["counts"].get(cid, spec.seeds.initial) for cid in plan["configs"]}


def run_round(spec: StudySpec, first: Trial, plan: dict[str, Any], executor, options, console, progress) -> StudyResult:
    """The trials of the round ``plan`` holds: every configuration's seeds up to its count, minus the ones that
    failed before a look (resumed trials continue from their checkpoints, finished ones are skipped)."""
    seq: SequentialSeeds = spec.seeds  # type: ignore[assignment]
    counts, looked = plan["counts"], plan["looked"]
    top = max([plan["round"], *counts.values()])

    def select(trial: Trial) -> bool:
        cid, index = trial.config.config_id, trial.seed - seq.start
        if index >= counts.get(cid, seq.initial):
            return False
        return not (index < looked.get(cid, 0) and state(trial) == "failed")

    result = run_study(spec.model_copy(update={"seeds": seq.values(top)}), executor, options, console, progress,
                       select=select)  # fmt: skip
    if not plan["configs"]:  # the first round has every configuration: the study's, for every later look
        plan["configs"] = sorted({t.config.config_id for t in result.trials})
        save_plan(spec, first, plan)
    return result


def look(spec: StudySpec, first: Trial, plan: dict[str, Any]) -> None:
    """Judge the round just run at this look's share of alpha; plan the next round or stop. Updates ``plan``
    and saves it (a resume repeats the same look from the same results)."""
    seq: SequentialSeeds = spec.seeds  # type: ignore[assignment]
    now = plan["round"]
    seeds = [entry["seeds"] for entry in plan["looks"]] + [now]
    share = look_share(ALPHA, seeds, seq.max)
    counts = _counts(spec, plan)
    results = _results(spec, first, counts)
    entry: dict[str, Any] = {"seeds": now, "share": share, "open": [], "configs": 0, "next": None}
    plan["looked"], plan["counts"] = counts, counts
    if results is None:
        plan["stopped"] = "no finished run"
    else:
        judged = _table(results, share)
        inconclusive = any(rec.verdict == "inconclusive" for rec, _ in judged.values())
        rows = open_rows(results, judged, seq, seeds) if now < seq.max else []
        entry["open"] = [row.priority for row in rows]
        if now >= seq.max:
            plan["stopped"] = "max" if inconclusive else "decided"
        elif not rows:
            plan["stopped"] = "futile" if inconclusive else "decided"
        else:
            after = next_seeds(seq, now, rows)
            chosen = {cid for row in rows for cid in row.config_ids if cid in counts}
            plan["counts"] = {cid: max(n, after) if cid in chosen else n for cid, n in counts.items()}
            entry |= {"configs": len(chosen), "next": after}
            plan["round"] = after
    plan["looks"] = plan["looks"] + [entry]
    save_plan(spec, first, plan)
    record(spec, first, plan, {})


def _table(results, alpha: float) -> dict[tuple, tuple]:
    """(group, priority) -> (Recommendation, Analysis) of every row of the guide at level ``alpha``."""
    from oneml.analysis import DecisionOptions, analyse_study, decision_table

    out = {}
    for a in analyse_study(results, DecisionOptions(alpha=alpha)):
        for rec in decision_table(a):
            out[(a.group, rec.priority)] = (rec, a)
    return out


def open_rows(results, judged: dict, seq: SequentialSeeds, seeds: list[int]) -> list[OpenRow]:
    """The inconclusive rows that a look at some count up to max could decide, each with the smallest such count
    and the configurations it names. A look at n would judge at its own share (alpha*(n/max) - alpha*(now/max)):
    n decides a row when the row is decided at that share on the results so far, or its seeds_needed there (80%
    power at the observed spread) is at most n. Rows no n up to max decides are futile. `step: planned` asks
    every n from now+1 (the first that decides a row is its need); a fixed step only asks max (is it futile)."""
    now = seeds[-1]
    pending = {key: value for key, value in judged.items() if value[0].verdict == "inconclusive"}
    need: dict[tuple, int] = {}
    for n in range(now + 1, seq.max + 1) if seq.step == "planned" else [seq.max]:
        if len(need) == len(pending):
            break
        later = _table(results, look_share(ALPHA, [*seeds, n], seq.max))
        for key in pending.keys() - need.keys():
            rec = later.get(key, (None, None))[0]
            if rec is not None and (rec.decided or (rec.seeds_needed is not None and rec.seeds_needed <= n)):
                need[key] = n
    rows = []
    for key, (rec, a) in pending.items():
        if key in need:
            ids = tuple(a.configs[label].config_id for label in rec.candidates if label in a.configs)
            rows.append(OpenRow(key[0], rec.priority, need[key], ids))
    return rows


def next_seeds(seq: SequentialSeeds, now: int, rows: list[OpenRow]) -> int:
    """planned: the count the most demanding open row needs (so the next look can settle them all); else a step."""
    if seq.step == "planned":
        return min(seq.max, max(now + 1, *(row.need for row in rows)))
    return min(seq.max, now + int(seq.step))


def _results(spec: StudySpec, first: Trial, counts: dict[str, int]):
    """The study's recorded results, cut to the trials of this round: what was planned, not whatever else the
    store holds under the study's name (runs of an earlier version of its YAML, seeds beyond the plan)."""
    from oneml.analysis.results import load_study
    from oneml.tracking import resolve_tracking_uri

    seq: SequentialSeeds = spec.seeds  # type: ignore[assignment]
    uri = resolve_tracking_uri(first.config.tracking.uri, root_of(first))
    try:
        study = load_study(spec.name, uri, artifacts=False)
    except OnemlError:  # no finished run at all
        return None
    keep = {cid: {str(s) for s in seq.values(n)} for cid, n in counts.items()}
    configs = []
    for c in study.configs:
        seeds = keep.get(c.config_id, set())
        runs, failed = [r for r in c.runs if r.seed in seeds], [r for r in c.failed if r.seed in seeds]
        if runs:
            configs.append(replace(c, runs=runs, failed=failed))
    return replace(study, configs=configs) if configs else None


def record(spec: StudySpec, first: Trial, plan: dict[str, Any], states: dict[str, str]) -> None:
    """The looks (and, at the end, every trial's state counted) on the study's parent run."""
    from collections import Counter

    tags = {}
    if isinstance(spec.seeds, SequentialSeeds) and plan["looks"]:
        tags |= look_tags([e["seeds"] for e in plan["looks"]], spec.seeds.max, ALPHA, plan["stopped"])
    if plan["extended"]:
        tags[EXTENDED_TAG] = ",".join(str(s) for s in plan["extended"])
    tags |= {f"{tag.STUDY_PREFIX}{k}": str(v) for k, v in Counter(states.values()).items()}
    parent = parent_run(spec, first)
    if parent is not None and tags:
        client, run_id = parent
        for key, value in tags.items():
            client.set_tag(run_id, key, value)


def parent_run(spec: StudySpec, first: Trial):
    from mlflow.tracking import MlflowClient

    from oneml.tracking import resolve_tracking_uri
    from oneml.tracking.store import quiet_mlflow

    quiet_mlflow()
    cfg = first.config.tracking
    client = MlflowClient(resolve_tracking_uri(cfg.uri, root_of(first)))
    experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        return None
    query = f"tags.`{tag.STUDY}` = '{spec.name}' and tags.`{tag.STUDY_PARENT}` = 'true'"
    found = client.search_runs([experiment.experiment_id], query, max_results=1)
    return (client, found[0].info.run_id) if found else None


def _round_text(spec: StudySpec, plan: dict[str, Any]) -> str:
    seq: SequentialSeeds = spec.seeds  # type: ignore[assignment]
    j = len(plan["looks"]) + 1
    counts = _counts(spec, plan)
    growing = (
        f"{sum(n == plan['round'] for n in counts.values())} configuration(s)" if counts else "every configuration"
    )
    most = max(j, seq.max - seq.initial + 1)
    return f"round {j} (look {j} of up to {most}): {growing} at {plan['round']} seeds"


def _look_text(spec: StudySpec, plan: dict[str, Any]) -> str:
    entry = plan["looks"][-1]
    head = f"look {len(plan['looks'])} at {entry['seeds']} seeds (alpha share {entry['share']:.2g})"
    if plan["stopped"]:
        return f"{head}: stopped ({plan['stopped']})"
    rows = ", ".join(dict.fromkeys(entry["open"]))
    return f"{head}: open {rows}; {entry['configs']} configuration(s) to {entry['next']} seeds"


def planned(spec: StudySpec) -> tuple[StudySpec, Callable[[Trial], bool]] | None:
    """The study as its journal plans it (sequential counts, seeds added by hand): a copy whose seeds reach the
    plan and the filter of its final trials, for `study status`; None when the journal adds nothing."""
    first = expand(spec)[0]
    plan = read_plan(spec, first)
    pending = plan["pending"] or {}
    if isinstance(spec.seeds, SequentialSeeds):
        if not plan["configs"]:
            return None
        seq, counts = spec.seeds, pending.get("counts") or _counts(spec, plan)
        seeded = spec.model_copy(update={"seeds": seq.values(max(counts.values()))})
        return seeded, lambda t: t.seed - seq.start < counts.get(t.config.config_id, 0)
    extra = plan["extended"] + pending.get("seeds", [])
    if not extra:
        return None
    return spec.model_copy(update={"seeds": list(dict.fromkeys([*spec.seeds, *extra]))}), lambda t: True


def planned_trials(spec: StudySpec) -> list[Trial] | None:
    """The final trials of `planned` (tuned values and stage sources as the runs recorded them)."""
    from oneml.study.expand import plan
    from oneml.study.stages import recorded_known

    found = planned(spec)
    if found is None:
        return None
    seeded, select = found
    tuning, finals = plan(seeded)
    if tuning or any(t.provisional for t in finals):
        finals = plan(seeded, recorded_known(seeded, finals))[1]
    return [t for t in finals if select(t)]


def extend_study(spec: StudySpec, n: int, executor=None, options=None, console=None, progress=True) -> StudyResult:
    """Add ``n`` seeds to every configuration by hand and run them (`oneml study extend`): the next seed values
    above each configuration's largest. Recorded in the journal before anything runs, so running the same
    command again finishes an interrupted extension instead of adding another."""
    if n < 1:
        raise OnemlError(f"--seeds: must be a positive integer, got {n}")
    first = expand(spec)[0]
    plan = read_plan(spec, first)
    pending = plan["pending"]
    if pending and pending.get("add") != n:
        raise OnemlError(
            f"--seeds: an extension of study {spec.name} by {pending['add']} seed(s) did not finish; "
            f"run `oneml study extend` with --seeds {pending['add']} to finish it first"
        )
    if isinstance(spec.seeds, SequentialSeeds):
        return _extend_sequential(spec, first, plan, n, executor, options, console, progress)
    if not pending and not any(state(t) == "finished" for t in expand(spec)):
        raise OnemlError(f"study {spec.name}: no finished run to extend; run it first (oneml study run)")
    if not pending:
        top = max([*spec.seeds, *plan["extended"]]) + 1
        plan["pending"] = pending = {"add": n, "seeds": list(range(top, top + n))}
        save_plan(spec, first, plan)
    seeds = list(dict.fromkeys([*spec.seeds, *plan["extended"], *pending["seeds"]]))
    result = run_study(spec.model_copy(update={"seeds": seeds}), executor, options, console, progress)
    plan["extended"] = [s for s in seeds if s not in spec.seeds]
    plan["pending"] = None
    save_plan(spec, first, plan)
    record(spec, first, plan, result.states)
    return result


def _extend_sequential(spec, first, plan, n, executor, options, console, progress) -> StudyResult:
    """One more look of a sequential study whose rounds have stopped, at the share of alpha it spends; refused
    once a look has reached max (alpha is spent: nothing more could be judged under the study's error rate)."""
    seq: SequentialSeeds = spec.seeds
    if not plan["stopped"]:
        raise OnemlError(
            f"seeds: the sequential rounds of study {spec.name} have not finished; run it first (oneml study run)"
        )
    seen = [entry["seeds"] for entry in plan["looks"]]
    pending = plan["pending"]
    if not pending and seen[-1] >= seq.max:
        raise OnemlError(
            f"--seeds: study {spec.name} has looked at seeds.max ({seq.max}) seeds: its alpha is spent, so more seeds "
            f"could not be judged under its error rate; replicate it instead (oneml study replicate --seeds ...)"
        )
    if not pending:
        counts = {cid: c + n for cid, c in _counts(spec, plan).items()}
        plan["pending"] = pending = {"add": n, "counts": counts}
        save_plan(spec, first, plan)
    counts = pending["counts"]
    now = max(counts.values())
    result = run_round(spec, first, plan | {"counts": counts, "round": now}, executor, options, console, progress)
    entry = {"seeds": now, "share": look_share(ALPHA, [*seen, now], seq.max), "open": [], "configs": len(counts),
             "next": None, "extended": n}  # fmt: skip
    plan.update(counts=counts, looked=counts, round=now, pending=None, looks=[*plan["looks"], entry])
    save_plan(spec, first, plan)
    record(spec, first, plan, result.states)
    if console is not None and progress:
        console.print(_look_text(spec, plan), markup=False, highlight=False)
    return result
