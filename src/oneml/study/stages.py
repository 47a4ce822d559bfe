"""Stages: a track that starts from another track's result, e.g. SFT, then DPO and ORPO from the SFT model.

    tracks:
      sft: {grid: {method.r: [8, 16]}}
      dpo: {from: {track: sft, pick: best}, base: {objective: dpo, ...}, grid: {objective.beta: [0.1, 0.5]}}

`from:` sets model.adapter of every run of the stage to a run of the source track (the trainer merges that run's
adapter into the base before the stage's own method applies, see `oneml.train.start`). A stage waits for its
source: tracks run level by level (a track's level is one more than its source's).

Which run:
- ``pick: best``: the source configuration with the best mean of `from.metric` over its finished seeds, read on
  the validation rows (eval_* only; a test split is the final comparison's, never a selection's); configurations
  with every seed finished rank before those with a failed seed; ties keep the expansion order. The decision
  guide's performance winner is not used: it compares test rows, and may be "no winner" where a stage still
  needs one starting point.
- ``pick: each``: one stage per source configuration that has a finished run.
Either way the run is the configuration's lowest finished seed.

Resume-safe: a pick is recorded (``<root>/studies/<study>/stages/<track>.json``) and kept, so neither a rerun
that finishes a once-failed source seed nor seeds added later move a stage's starting point under its finished
runs; a pick whose source configuration left the study is made again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from oneml.errors import OnemlError
from oneml.study.expand import (
    Known,
    Source,
    Template,
    Trial,
    final_trials,
    is_tuned,
    source_label,
    templates,
)
from oneml.study.spec import RUNG_METRICS, StudySpec
from oneml.study.state import root_of, state
from oneml.train.checkpoints import read_json, write_json


def check_sources(spec: StudySpec) -> None:
    """At load: every `from:` names another known track, and following them never comes back (no cycle)."""
    names = list(spec.tracks)
    for name, track in spec.tracks.items():
        source = track.from_
        if source is None:
            continue
        if source.track not in spec.tracks:
            raise OnemlError(f"tracks.{name}.from.track: unknown track {source.track!r}; tracks: {', '.join(names)}")
        if source.track == name:
            raise OnemlError(f"tracks.{name}.from.track: a track cannot start from itself")
        set_here = [k for k in track.grid if k in ("model", "model.adapter")]
        if set_here or "adapter" in track.base.get("model", {}):
            raise OnemlError(f"tracks.{name}: model.adapter is set by its from: (track {source.track})")
    for name in names:
        chain = [name]
        while (source := spec.tracks[chain[-1]].from_) is not None:
            if source.track in chain:
                loop = " -> ".join(chain[chain.index(source.track) :] + [source.track])
                raise OnemlError(f"tracks.{name}.from: a cycle of stages ({loop})")
            chain.append(source.track)


def levels(spec: StudySpec) -> list[list[str]]:
    """Tracks in running order: those without `from:` first, then each stage one level after its source."""
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            source = spec.tracks[name].from_
            depth[name] = 0 if source is None else level(source.track) + 1
        return depth[name]

    out: list[list[str]] = []
    for name in spec.tracks:
        k = level(name)
        out += [[] for _ in range(k + 1 - len(out))]
        out[k].append(name)
    return out


def pick_metric(spec: StudySpec, track: str) -> str:
    """The validation metric that picks a stage's source: from.metric, else the study's selection metric."""
    source = spec.tracks[track].from_
    if source.metric:
        return source.metric
    if spec.tune is not None:
        return spec.tune.metric
    return spec.halving.metric if spec.halving else "eval_loss"


def check_stages(spec: StudySpec, trials: list[Trial]) -> None:
    """Before anything runs: a source's runs keep a model that can be merged into the stage's base, and record the
    metric that picks among them."""
    for name, track in spec.tracks.items():
        if track.from_ is None:
            continue
        src, where = track.from_.track, f"tracks.{name}.from"
        stage = next(t for t in trials if t.track == name).config
        metric = pick_metric(spec, name)
        for trial in (t for t in trials if t.track == src):
            cfg = trial.config
            if not cfg.train.save_adapter:
                raise OnemlError(
                    f"{where}: track {src} keeps no model to start from; set train.save_adapter: true there"
                )
            if not cfg.method.mergeable:
                raise OnemlError(
                    f"{where}: track {src}'s method {cfg.method.name} cannot be merged into a base to start from"
                )
            if cfg.model.name != stage.model.name:
                raise OnemlError(
                    f"{where}: track {src} trains {cfg.model.name!r}, track {name} {stage.model.name!r}; use one base"
                )
            recorded = RUNG_METRICS.get(cfg.objective.data_kind, ())
            if metric not in recorded:
                raise OnemlError(
                    f"{where}.metric: {metric} is not recorded by track {src} (it records {', '.join(recorded)})"
                )


def _record(spec: StudySpec, track: str, root: Path) -> Path:
    return root / "studies" / spec.name / "stages" / f"{track}.json"


def recorded(spec: StudySpec, track: str, root: Path) -> list[Source] | None:
    """The sources picked earlier for `track`, if its settings are unchanged (None: nothing picked yet)."""
    saved = read_json(_record(spec, track, root))
    if not saved or saved.get("settings") != _settings(spec, track):
        return None
    return [Source(**s) for s in saved["sources"]]


def _settings(spec: StudySpec, track: str) -> dict:
    return {"from": spec.tracks[track].from_.model_dump(), "metric": pick_metric(spec, track)}


def pick_sources(spec: StudySpec, track: str, source_trials: list[Trial]) -> list[Source]:
    """The runs `track` starts from, once its source track has run; empty when no source run finished."""
    from oneml.analysis.metrics import metric as metric_info
    from oneml.study.halving import _order  # one sort key for "best first, NaN last" in both selections

    if not source_trials:  # the source track ran nothing (its every configuration was blocked)
        return []
    metric = pick_metric(spec, track)
    higher = metric_info(metric).higher_is_better
    present = {t.config.config_id for t in source_trials}
    root = root_of(source_trials[0])
    kept = [s for s in recorded(spec, track, root) or [] if s.config_id in present]
    ranked = sorted(_candidates(source_trials, metric), key=lambda c: (not c[2], _order(c[1], higher)))
    if spec.tracks[track].from_.pick == "best":
        sources = kept[:1] or [c[3] for c in ranked[:1]]
    else:  # each: earlier picks stay, configurations that have finished since are added (in expansion order)
        done = {s.config_id for s in kept}
        order = [t.config.config_id for t in source_trials]
        sources = kept + [c[3] for c in ranked if c[0] not in done]
        sources.sort(key=lambda s: order.index(s.config_id))
    if sources:
        payload = {"settings": _settings(spec, track), "sources": [asdict(s) for s in sources]}
        write_json(_record(spec, track, root), payload)
    return sources


def _candidates(trials: list[Trial], metric: str) -> list[tuple[str, float, bool, Source]]:
    """(config id, mean validation value over finished seeds, every seed finished, its lowest finished seed's run)
    for each source configuration with a finished run."""
    from oneml.study.tune import selection_metrics

    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        groups.setdefault(trial.config.config_id, []).append(trial)
    out = []
    for config_id, members in groups.items():
        done = [t for t in members if state(t) == "finished"]
        if not done:
            continue
        values = [selection_metrics(t).get(metric, math.nan) for t in done]
        score = math.nan if any(math.isnan(v) for v in values) else sum(values) / len(values)
        run = min(done, key=lambda t: t.seed)
        label = source_label(run.track, run.grid)
        out.append((config_id, score, len(done) == len(members), Source(run.track, run.run_id, config_id, label)))
    return out


Phase = Callable[[list[Trial], Any], list[list[str]]]
Tag = Callable[[Trial, dict[str, str]], None]


@dataclass
class Outcome:
    finals: list[Trial] = field(default_factory=list)
    tuning: list[Trial] = field(default_factory=list)
    history: list[list[str]] = field(default_factory=list)
    """Halving's survivors per rung, level after level."""
    blocked: list[str] = field(default_factory=list)
    """Configurations that could not run, and why (no source run finished, every tuning candidate failed)."""


def run_levels(spec: StudySpec, phase: Phase, tag: Tag) -> Outcome:
    """Run the study level by level: pick each stage's source, tune the level's configurations, run their finals
    (with the study's halving when it has one). ``phase(trials, halving)`` runs a batch of trials."""
    from oneml.study.tune import run_tuning

    known, out = Known(), Outcome()
    for level in levels(spec):
        tpls: list[Template] = []
        for track in level:
            source = spec.tracks[track].from_
            if source is not None:
                picked = pick_sources(spec, track, [t for t in out.finals if t.track == source.track])
                if not picked:
                    out.blocked.append(f"track {track}: no run of track {source.track} finished to start from")
                    continue
                known.sources[track] = picked
            tpls += templates(spec, track, known)
        tuned = [tpl for tpl in tpls if is_tuned(spec, tpl.track)]
        if tuned:
            chosen, trials = run_tuning(spec, tuned, phase, tag)
            known.choices |= chosen
            out.tuning += trials
        batch = []
        for tpl in tpls:
            if is_tuned(spec, tpl.track) and tpl.template_id not in known.choices:
                out.blocked.append(f"{source_label(tpl.track, tpl.grid)}: no tuning candidate finished")
                continue
            batch += final_trials(spec, tpl, known.choices.get(tpl.template_id))
        if batch:  # every configuration of the level may be blocked
            out.history += phase(batch, spec.halving)
        out.finals += batch
    return out


def recorded_known(spec: StudySpec, finals: list[Trial]) -> Known:
    """What earlier runs of the study decided (recorded picks and choices), for status and the progress view:
    nothing is picked or chosen here."""
    from oneml.study.tune import recorded_choice

    known = Known()
    roots = {t.track: root_of(t) for t in finals}
    for track in (t for level in levels(spec) for t in level):
        if spec.tracks[track].from_ is not None:
            found = recorded(spec, track, roots[track])
            if found is None:
                continue
            known.sources[track] = found
        if is_tuned(spec, track):
            for tpl in templates(spec, track, known):
                chosen = None if tpl.provisional else recorded_choice(spec, tpl, roots[track])
                if chosen is not None:
                    known.choices[tpl.template_id] = chosen
    return known
