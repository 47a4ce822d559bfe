"""`oneml eval`: score a trained run on benchmarks and record the scores with the run.

Order of work, so that bad input costs nothing: benchmarks resolved and their data loaded (one-line error,
nothing written), then the model, then each benchmark. Each finished benchmark is recorded at once: its
metrics on the run's MLflow record, its details as ``<run>/eval/<name>.json`` (written to a temporary
file, then renamed) and as an MLflow artifact. A study stage calls `evaluate_model` with the model still in
memory.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from oneml.errors import OnemlError
from oneml.eval.benchmarks import BenchResult, EvalContext, EvalOptions, check_judge_used, resolve_benchmarks
from oneml.tracking import layout


@dataclass
class EvalReport:
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    """Every recorded metric, under its MLflow name."""
    results: dict[str, BenchResult] = field(default_factory=dict)
    mlflow_run_id: str | None = None


def metric_names(bench: str, result: BenchResult) -> dict[str, float]:
    """The MLflow names of a benchmark's metrics (see `oneml.eval.benchmarks`)."""
    key = bench.replace(":", "/")
    out = {f"bench/{key}/{m}": v for m, v in result.metrics.items()}
    out |= {f"bench-lower/{key}/{m}": v for m, v in result.lower.items()}
    return out | dict(result.costs)


def evaluate_run(
    spec: str,
    names: list[str],
    options: EvalOptions,
    *,
    root: str | Path = "oneml-runs",
    tracking_uri: str | None = None,
    device: str = "auto",
    console: Any = None,
    progress: bool = True,
) -> EvalReport:
    from oneml.eval.trained import open_run
    from oneml.train.runner import quiet_libraries, resolve_device

    run = open_run(spec, root, tracking_uri, console)
    if options.judge is not None:  # --against RUN is looked up where the judged run lives
        options = replace(options, judge=replace(options.judge, root=run.root))
    if type(run.config.objective).head != "lm":
        raise OnemlError(
            f"RUN: {run.run_id} is a reward model (objective {run.config.objective.name}): it scores answers and "
            "does not generate, so no benchmark applies; its held-out accuracy on pairs is in the run's metrics "
            "(eval_preference_accuracy)"
        )
    benchmarks = resolve_benchmarks(names)
    check_judge_used(benchmarks, options)
    loaded = [(b, b.load(options, run.config)) for b in benchmarks]  # data problems surface before the model
    quiet_libraries()
    device = resolve_device(device)
    with console.status(f"loading the trained model of {run.run_id}") if console else nullcontext():
        model, tokenizer = run.load(device)
    recorder = _Recorder(run, tracking_uri)
    report = evaluate_model(
        model, tokenizer, run.config, loaded, options, recorder=recorder, console=console, progress=progress
    )
    report.run_id, report.mlflow_run_id = run.run_id, recorder.mlflow_run_id
    return report


def evaluate_model(model, tokenizer, config, loaded, options: EvalOptions, *, recorder, console=None, progress=True):
    """Score ``model`` on each (benchmark, items) of ``loaded``, recording each result as it finishes."""
    from oneml.data.templates import resolve_chat_template
    from oneml.eval.generate import end_of_turn_ids

    template = resolve_chat_template(tokenizer, config.data)
    ctx = EvalContext(model, tokenizer, template, end_of_turn_ids(tokenizer, template), config, config.method, options)
    report = EvalReport(config.run_id)
    ordered = sorted(loaded, key=lambda pair: getattr(pair[0], "last", False))  # inference merges in place: last
    with _Bars(console, progress) as bars:
        ctx.bar = bars.add
        for bench, items in ordered:
            ctx.advance = bars.add(bench.name, bench.total(items))
            result = bench.score(ctx, items)
            metrics = metric_names(bench.name, result)
            recorder.record(bench.name, metrics, result, options)
            report.results[bench.name] = result
            report.metrics |= metrics
    return report


class _Recorder:
    """Writes a benchmark's result into the run folder and onto its MLflow record (when it has one)."""

    def __init__(self, run: Any, tracking_uri: str | None):
        from mlflow.tracking import MlflowClient

        from oneml.tracking.store import resolve_tracking_uri

        self.folder = run.folder / "eval"
        self.mlflow_run_id = run.mlflow_run_id(tracking_uri)
        uri = resolve_tracking_uri(tracking_uri or run.config.tracking.uri, run.root)
        self.client = MlflowClient(tracking_uri=uri) if self.mlflow_run_id else None

    def record(self, name: str, metrics: dict[str, float], result: BenchResult, options: EvalOptions) -> None:
        settings = {"limit": options.limit, "shots": options.shots, "max_new_tokens": options.max_new_tokens}
        payload = {"benchmark": name, "metrics": metrics, "settings": settings, "details": result.details}
        target = self.folder / f"{name.replace(':', '-')}.json"
        if result.section is not None:
            payload = with_section(target, payload, result.section)
        path = write_json_atomic(target, payload)
        if self.client is None:
            return
        from mlflow.entities import Metric, RunTag

        from oneml.tracking.store import _is_number

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items() if _is_number(v)]
        tags = [RunTag(f"oneml.eval.{name.replace(':', '.')}.{k}", str(v)) for k, v in settings.items()]
        self.client.log_batch(self.mlflow_run_id, metrics=items, tags=tags)
        self.client.log_artifact(self.mlflow_run_id, str(path), "eval")


def with_section(path: Path, payload: dict[str, Any], key: str) -> dict[str, Any]:
    """The benchmark's file with ``payload`` as its section ``key``, the file's other sections kept."""
    import json

    try:
        previous = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):  # an unreadable file is replaced, not merged
        previous = {}
    sections = dict(previous.get("sections") or {}) if isinstance(previous, dict) else {}
    sections[key] = {k: payload[k] for k in ("metrics", "settings", "details")}
    merged = {k: v for s in sections.values() for k, v in s["metrics"].items()}
    return {"benchmark": payload["benchmark"], "metrics": merged, "settings": payload["settings"], "sections": sections}


def write_json_atomic(path: Path, payload: Any) -> Path:
    return layout.write_json(path, payload, indent=1)


class _Bars:
    """One progress bar per benchmark (items done / items), on stderr; silent when progress is off."""

    def __init__(self, console: Any, enabled: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            )
            if enabled and console is not None
            else None
        )

    def __enter__(self):
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def add(self, name: str, total: int):
        if self.progress is None:
            return lambda n: None
        task = self.progress.add_task(name, total=total)
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
