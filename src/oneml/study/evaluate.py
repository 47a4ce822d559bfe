"""The study's evaluation stage: benchmarks on every finished run, after training.

It runs in the study's own process once the training jobs are done, from the runs' saved models (each run
is loaded, scored, and let go, so one model is in memory at a time). Resuming is free: a run whose results
for every benchmark already exist with the same settings is skipped. A benchmark that fails on one run is
recorded on that run (tag ``oneml.eval_failure``) and the stage goes on with the next run.
"""

from __future__ import annotations

import json
from typing import Any

from oneml.errors import OnemlError
from oneml.study.expand import Trial
from oneml.study.spec import EvalStage
from oneml.study.state import root_of
from oneml.tracking import layout
from oneml.tracking import tags as tag


def options_of(stage: EvalStage) -> Any:
    from oneml.eval.benchmarks import EvalOptions
    from oneml.eval.judges import JudgeOptions

    options = EvalOptions(stage.limit, stage.shots, stage.max_new_tokens, stage.batch_size)
    if stage.judge is not None:
        options.judge = JudgeOptions(
            stage.judge, stage.against, stage.judge_model, stage.judge_key_env, stage.judge_budget
        )
    return options


def check_stage(stage: EvalStage, trial: Trial) -> None:
    """Unknown benchmarks and unreachable data fail before any training starts."""
    from oneml.eval.benchmarks import resolve_benchmarks

    if not trial.config.train.save_adapter:
        raise OnemlError("eval: the study's runs must keep their model to be evaluated; set train.save_adapter: true")
    options = options_of(stage)
    if options.judge is not None:  # a run to compare with is looked up beside the study's runs
        options.judge.root = root_of(trial)
    for bench in resolve_benchmarks(stage.benchmarks):
        bench.load(options, trial.config)


def _done(trial: Trial, stage: EvalStage) -> bool:
    settings = {"limit": stage.limit, "shots": stage.shots, "max_new_tokens": stage.max_new_tokens}
    folder = layout.eval_dir(root_of(trial), trial.run_id)
    for name in stage.benchmarks:
        path = folder / f"{name.strip().replace(':', '-')}.json"
        saved = json.loads(path.read_text()) if path.is_file() else {}
        if saved.get("settings") != settings:
            return False
        sections = saved.get("sections")
        if sections is not None and stage.against in ("base", "reference") and stage.against not in sections:
            return False  # judged before, but against another opponent
    return True


def evaluate_trials(stage: EvalStage, trials: list[Trial], states: dict[str, str], console: Any = None) -> dict:
    """Score every finished trial; returns run id -> "evaluated" | "skipped" | the failure reason."""
    from oneml.eval.run import evaluate_run

    outcome: dict[str, str] = {}
    for trial in trials:
        if states.get(trial.run_id) != "finished":
            continue
        if _done(trial, stage):
            outcome[trial.run_id] = "skipped"
            continue
        if console is not None:
            console.print(f"evaluating {trial.label} ({', '.join(stage.benchmarks)})")
        try:
            evaluate_run(
                trial.run_id,
                stage.benchmarks,
                options_of(stage),
                root=root_of(trial),
                tracking_uri=trial.config.tracking.uri,
                device=trial.config.train.device,
                progress=False,
            )
            outcome[trial.run_id] = "evaluated"
        except (OnemlError, RuntimeError, ValueError) as err:  # one run's failure never stops the stage
            reason = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}"
            outcome[trial.run_id] = reason
            _tag_failure(trial, reason)
    return outcome


def _tag_failure(trial: Trial, reason: str) -> None:
    from oneml.eval.trained import open_run

    run = open_run(trial.run_id, root_of(trial))
    mlflow_id = run.mlflow_run_id(trial.config.tracking.uri)
    if mlflow_id:
        from mlflow.tracking import MlflowClient

        from oneml.tracking.store import resolve_tracking_uri

        uri = resolve_tracking_uri(trial.config.tracking.uri, root_of(trial))
        MlflowClient(tracking_uri=uri).set_tag(mlflow_id, tag.EVAL_FAILURE, reason)
