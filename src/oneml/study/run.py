"""Running a study: expand, skip what is finished, hand the rest to an executor, record every outcome.

Running again is resuming: finished and pruned runs are skipped, interrupted ones continue from their last
checkpoint, failed ones are retried. A study with stages (`from:`) or tuning (`tune:`) runs level by level
(`oneml.study.stages.run_levels`): sources first, then each level's tuning runs, then its final runs.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from oneml.errors import Interrupted
from oneml.study.executors import EXECUTORS, ExecutorOptions, preflight
from oneml.study.expand import PENDING, Trial
from oneml.study.halving import Rung, check_evaluations, check_metric, ranking_rungs, run_halving
from oneml.study.spec import Halving, SequentialSeeds, StudySpec
from oneml.study.state import read_entry, record, root_of, state
from oneml.study.trial import Job
from oneml.tracking import tags as tag
from oneml.train.checkpoints import checkpoint_dir, read_json


@dataclass
class StudyResult:
    trials: list[Trial]
    states: dict[str, str]
    steps_trained: int
    """Optimizer steps this call trained (the compute it spent)."""
    history: list[list[str]] = field(default_factory=list)
    evaluated: dict[str, str] = field(default_factory=dict)
    """Run id -> evaluated / skipped / the failure reason, when the study has an eval stage."""
    tuning: list[Trial] = field(default_factory=list)
    """The tuning trials (never in `trials`/`states`: they are not the study's comparison)."""
    tuning_steps: int = 0
    """Of steps_trained, those the tuning runs trained."""
    blocked: list[str] = field(default_factory=list)
    """Configurations that could not run, and why (a stage's source never finished, no tuning candidate did)."""


def _with_parent(trial: Trial, parent_id: str) -> Trial:
    tracking = trial.config.tracking
    tags = {**tracking.tags, "mlflow.parentRunId": parent_id}
    config = trial.config.model_copy(update={"tracking": tracking.model_copy(update={"tags": tags})})
    return replace(trial, config=config)


class _Tracker:
    """The study's MLflow side: one parent run; failures, rung decisions and pruning recorded on the trials' runs
    (the tag names of halving are `oneml.analysis.rungs`'s, which reads them back for the report)."""

    def __init__(self, spec: StudySpec, trial: Trial):
        from oneml.tracking import RunRecorder, resolve_tracking_uri

        cfg = trial.config.tracking
        uri = resolve_tracking_uri(cfg.uri, root_of(trial))
        self.recorder = RunRecorder(uri, root_of(trial), cfg.experiment, cfg.artifact_location)
        self.client = self.recorder.client
        query = f"tags.`{tag.STUDY}` = '{spec.name}' and tags.`{tag.STUDY_PARENT}` = 'true'"
        found = self.client.search_runs([self.recorder.experiment_id], query, max_results=1)
        if found:
            self.recorder.run_id = found[0].info.run_id
            self.client.update_run(self.recorder.run_id, status="RUNNING")
            if tag.STUDY_INTERRUPTED in found[0].data.tags:  # running again: no longer interrupted
                self.client.delete_tag(self.recorder.run_id, tag.STUDY_INTERRUPTED)
        else:
            tags = {tag.STUDY: spec.name, tag.STUDY_PARENT: "true"}
            self.recorder.start(spec.name, tags=tags)
        self.parent_id = self.recorder.run_id
        self._settings(spec)

    def _settings(self, spec: StudySpec) -> None:
        """Study settings the report reads back: the equivalence margin (the YAML's, else the default)."""
        from oneml.analysis.decision import MARGIN_TAG
        from oneml.analysis.verdicts import DEFAULT_MARGIN, parse_margin

        margin = parse_margin(spec.margin if spec.margin is not None else DEFAULT_MARGIN)
        self.client.set_tag(self.parent_id, MARGIN_TAG, str(margin))

    def trial_run(self, trial: Trial) -> str | None:
        known = read_json(checkpoint_dir(root_of(trial), trial.run_id) / "mlflow.json")
        if known:
            return known["run_id"]
        study = trial.config.tracking.tags[tag.STUDY]
        query = f"tags.`{tag.RUN_ID}` = '{trial.run_id}' and tags.`{tag.STUDY}` = '{study}'"
        found = self.client.search_runs([self.recorder.experiment_id], query, max_results=1)
        return found[0].info.run_id if found else None

    def failed(self, trial: Trial, reason: str) -> None:
        """A trial that failed before its run was recorded (a bad value found at load) still gets one."""
        if self.trial_run(trial) is None:
            tags = dict(trial.config.tracking.tags) | {tag.RUN_ID: trial.run_id, tag.FAILURE: reason}
            tags |= {tag.CONFIG_ID: trial.config.config_id, tag.SEED: str(trial.seed)}
            c = trial.config  # what the report groups and labels a configuration by, as a trained run records it
            tags |= {tag.METHOD: c.method.name, tag.MODEL: c.model.name, tag.OBJECTIVE: c.objective.name}
            tags |= {tag.DATASET: c.data.dataset}
            run = self.client.create_run(self.recorder.experiment_id, run_name=f"failed-{trial.run_id}", tags=tags)
            self.client.set_terminated(run.info.run_id, "FAILED")

    def halving(self, halving: Halving, max_steps: int) -> None:
        """The settings on the parent run, so that the report can say the survivors were selected by halving."""
        from oneml.analysis.rungs import halving_tags

        steps = ranking_rungs(halving, max_steps)
        self.recorder.set_tags(halving_tags(halving.min_steps, halving.eta, halving.metric, steps))

    def tune(self, spec: StudySpec) -> None:
        """The tuning settings on the parent run, for the report's tuning section."""
        from oneml.analysis.tuning import tune_tags
        from oneml.study.expand import tuning_steps

        tune = spec.tune
        halving = (tune.halving.min_steps, tune.halving.eta) if tune.halving else None
        tags = tune_tags(tune.model_dump(mode="json")["grid"], tune.metric, tune.seeds, tuning_steps(spec), halving)
        self.recorder.set_tags(tags)

    def tag(self, trial: Trial, tags: dict[str, str]) -> None:
        """Tags set on a trial's run after it ran (a tuning run learns which final configuration it chose for)."""
        from mlflow.entities import RunTag

        run_id = self.trial_run(trial)
        if run_id is not None:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def rung(self, trial: Trial, rung: Rung) -> None:
        """One rung's value and decision on the trial's run; a resume sets the same tags again (no duplicates)."""
        from mlflow.entities import RunTag

        from oneml.analysis.rungs import rung_tags

        run_id = self.trial_run(trial)
        if run_id is not None:
            tags = rung_tags(rung.step, rung.value, rung.rank, rung.of, rung.kept)
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def pruned(self, trial: Trial, reason: str) -> None:
        """Pruned runs end KILLED with the reason; the report sets them aside as pruned. A run that early stopping
        had already finished stays FINISHED (its result is whole), tagged pruned with its configuration."""
        run_id = self.trial_run(trial)
        if run_id is not None:
            self.client.set_tag(run_id, tag.PRUNED, "true")
            self.client.set_tag(run_id, tag.PRUNED_REASON, reason)
            if self.client.get_run(run_id).info.status != "FINISHED":
                self.client.set_terminated(run_id, "KILLED")

    def interrupted(self, reason: str) -> None:
        """The driver was stopped (SIGTERM, Ctrl-C): the study's record ends KILLED until it is run again."""
        self.recorder.set_tags({tag.STUDY_INTERRUPTED: reason})
        self.client.set_terminated(self.parent_id, "KILLED")

    def close(self, states: dict[str, str]) -> None:
        counts = Counter(states.values())
        self.recorder.set_tags({f"{tag.STUDY_PREFIX}{k}": str(v) for k, v in counts.items()})
        self.recorder.finish()


def run_study(
    spec: StudySpec,
    executor: str | None = None,
    options: ExecutorOptions | None = None,
    console=None,
    progress=True,
    select: Callable[[Trial], bool] | None = None,
    trials: list[Trial] | None = None,
) -> StudyResult:
    """Run the study: its tuning, then its final trials level by level. ``select``: only the final trials it
    accepts (a round of sequential seeds); ``trials``: exactly these, no tuning nor stages (a replication's).
    A study with sequential seeds runs in rounds (study/sequential.py)."""
    from oneml.study.expand import plan
    from oneml.study.progress import StudyProgress
    from oneml.study.stages import Outcome, recorded_known, run_levels

    if isinstance(spec.seeds, SequentialSeeds):
        from oneml.study.sequential import run_sequential

        return run_sequential(spec, executor, options, console, progress)
    given = trials
    keep = select or (lambda trial: True)
    # every config validated, stages and tuning checked, before anything runs
    tuning, trials = ([], given) if given is not None else plan(spec)
    trials = [t for t in trials if keep(t)]
    if spec.halving:
        check_metric(spec.halving, trials)
    if spec.tune is not None and spec.tune.halving is not None:
        check_evaluations(spec.tune.halving, tuning, "tune.halving")
    if spec.eval:
        from oneml.study.evaluate import check_stage

        check_stage(spec.eval, trials[0])
    run = EXECUTORS.get(executor or spec.executor.name)
    options = options or ExecutorOptions.of(spec.executor)
    preflight(executor or spec.executor.name, [t.config.to_dict() for t in trials], options)
    tracker = _Tracker(spec, trials[0])
    if spec.halving:
        tracker.halving(spec.halving, trials[0].config.train.max_steps)
    if spec.tune:
        tracker.tune(spec)
    by_id: dict[str, Trial] = {}
    spent, tuning_spent = 0, 0
    if given is None and (tuning or any(t.provisional for t in trials)):  # what earlier runs decided (the view)
        tuning, trials = plan(spec, recorded_known(spec, trials))
        trials = [t for t in trials if keep(t)]
    view = StudyProgress(tuning + trials, console, enabled=progress)

    def execute(pairs: list[tuple[Trial, int | None]]) -> None:
        jobs = [Job(t.config.to_dict(), stop, t.label) for t, stop in pairs]
        run(jobs, options, lambda job: view.started(job.label), done)

    def done(job: Job, outcome: dict[str, Any]) -> None:
        nonlocal spent, tuning_spent
        trial = by_id[outcome["run_id"]]
        spent += outcome["steps_trained"]
        tuning_spent += outcome["steps_trained"] if trial.tuning else 0
        entry = read_entry(trial)
        steps = entry.get("steps_trained", 0) + outcome["steps_trained"]
        rungs = entry.get("rungs", {})
        if outcome["status"] == "paused":
            rungs |= {str(int(outcome["metrics"]["steps"])): outcome["metrics"]}
        record(trial, status=outcome["status"], reason=outcome["reason"], steps_trained=steps, rungs=rungs)
        if outcome["status"] == "failed":
            tracker.failed(trial, outcome["reason"])
        view.finished(job.label, outcome["status"])

    def prune(trial: Trial, reason: str) -> None:
        if state(trial) != "pruned":
            record(trial, status="pruned", reason=reason, pruned_at=time.time())
            tracker.pruned(trial, reason)
            _drop_weights(trial)
        view.finished(trial.label, "pruned")

    def phase(batch: list[Trial], halving: Halving | None) -> list[list[str]]:
        """Run a batch of trials (one level's tuning runs or final runs), with halving when given."""
        batch = [_with_parent(t, tracker.parent_id) for t in batch if t.tuning or keep(t)]
        by_id.update({t.run_id: t for t in batch})
        if halving:
            return run_halving(batch, halving, execute, prune, tracker.rung)
        execute([(t, None) for t in batch if state(t) not in ("finished", "pruned")])
        return []

    try:
        with view:
            levels = run_levels(spec, phase, tracker.tag) if given is None else Outcome(given, [], phase(given, None))
    except (KeyboardInterrupt, Interrupted) as err:  # the executor has stopped the trials in flight
        tracker.interrupted(str(err) or "interrupted (Ctrl-C)")
        raise
    trials, history = [by_id.get(t.run_id, t) for t in levels.finals if keep(t)], levels.history
    states = {t.run_id: state(t) for t in trials}
    evaluated = {}
    if spec.eval:
        from oneml.study.evaluate import evaluate_trials

        evaluated = evaluate_trials(spec.eval, trials, states, console if progress else None)
    tracker.close(states)
    tuned = [by_id.get(t.run_id, t) for t in levels.tuning]
    return StudyResult(trials, states, spent, history, evaluated, tuned, tuning_spent, levels.blocked)


def _drop_weights(trial: Trial) -> None:
    """A pruned run never continues: its checkpoints go, its rung metrics stay (a resume re-ranks with them)."""
    import shutil

    for folder in checkpoint_dir(root_of(trial), trial.run_id).glob("checkpoint-*"):
        shutil.rmtree(folder, ignore_errors=True)


def _waiting(spec: StudySpec, trial: Trial) -> str:
    source = spec.tracks[trial.track].from_
    if source is not None and trial.config.model.adapter.startswith(PENDING):
        return f"waits for track {source.track}"
    return "waits for its tuning"


def study_status(spec: StudySpec, select: Callable[[Trial], bool] | None = None) -> list[dict[str, Any]]:
    """Every trial's row: tuning trials first (track '<track> (tuning)'), then the final ones (those ``select``
    accepts: the trials a sequential study planned); a final trial whose source or tuned value is not decided
    yet is 'waiting'."""
    from oneml.study.expand import plan
    from oneml.study.stages import recorded_known

    tuning, trials = plan(spec)
    if tuning or any(t.provisional for t in trials):
        tuning, trials = plan(spec, recorded_known(spec, trials))
    rows = []
    for trial in tuning + [t for t in trials if select is None or select(t)]:
        entry = read_entry(trial)
        waiting = _waiting(spec, trial) if trial.provisional else ""
        rows.append(
            dict(
                track=f"{trial.track} (tuning)" if trial.tuning else trial.track,
                grid=trial.grid,
                seed=trial.seed,
                run_id=trial.run_id,
                state="waiting" if trial.provisional else state(trial),
                reason=waiting or entry.get("reason", ""),
                steps=entry.get("steps_trained", 0),
            )  # fmt: skip
        )
    return rows
