"""`oneml study ...`: run, resume, extend, replicate, status, export-argo, and the hidden worker command
(registered by cli.py)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from oneml.cli_options import TRACKING_URI
from oneml.errors import OnemlError

out = Console()
err = Console(stderr=True)

study_app = typer.Typer(help="Studies: many runs from one spec, resumable, parallel.", no_args_is_help=True)


def _load(spec_path: Path, tracking_uri: str | None):
    """The study YAML, every trial recorded to --tracking-uri when given (it wins over the YAML's tracking.uri)."""
    from oneml.study import load_study
    from oneml.study.spec import with_tracking_uri

    return with_tracking_uri(load_study(spec_path), tracking_uri)


def _study_run(spec_path: Path, tracking_uri: str | None, executor: str | None, quiet: bool, **given) -> None:
    from oneml.study.run import run_study

    spec = _load(spec_path, tracking_uri)
    options = _options(spec, given)
    from oneml.train.guard import interruptible

    with interruptible():  # SIGTERM stops the trials in flight (recorded KILLED); running again resumes
        result = run_study(spec, executor, options, console=err, progress=not quiet)
    _status_table(spec)
    if getattr(result, "looks", None):
        seen = ",".join(str(entry["seeds"]) for entry in result.looks)
        out.print(f"sequential seeds: {len(result.looks)} look(s) at {seen} seeds, stopped: {result.stopped}")
    out.print(f"steps trained this time: {result.steps_trained}")


def _options(spec, given: dict):
    from oneml.study.executors import ExecutorOptions

    given["resources"] = _resources(given["resources"]) if given.get("resources") else None
    return ExecutorOptions.of(spec.executor, **given)


# The executor options of every command that runs trials (run, resume, extend, replicate).
EXECUTOR = typer.Option(None, "--executor", help="local (default) or ray.")
WORKERS = typer.Option(None, "--workers", min=1, help="Trials at once.")
GPU_FRACTION = typer.Option(None, "--gpu-fraction", min=0.01, max=1.0, help="GPU share per trial.")
RAY_ADDRESS = typer.Option(None, "--ray-address", help="Existing Ray cluster (default: local).")
CPUS = typer.Option(None, "--cpus-per-trial", min=0.01, help="ray: CPUs each trial reserves.")
RESOURCE = typer.Option(
    None, "--resource", help="ray: a custom resource each trial reserves, NAME=AMOUNT (repeatable)."
)
QUIET = typer.Option(False, "--quiet", "-q", help="No progress display.")
METRICS_PORT = typer.Option(
    None,
    "--metrics-port",
    min=1,
    max=65535,
    help="Serve Prometheus metrics on this port (http://HOST:PORT/metrics): each run's step, loss, learning rate, "
    "tokens/s, memory and eval loss; a study's runs by state.",
)
METRICS_HOST = typer.Option(
    "127.0.0.1", "--metrics-host", help="Address the metrics endpoint listens on; 0.0.0.0 = every interface."
)


def metrics_endpoint(port: int | None, host: str):
    """The Prometheus endpoint for the command's duration (nothing when no port is given); a port in use fails here,
    before anything is recorded."""
    from contextlib import nullcontext

    if port is None:
        return nullcontext()
    from oneml.monitoring import serve

    server = serve(port, host)
    err.print(f"Prometheus metrics at {server.url}", markup=False, highlight=False)
    return server


@study_app.command("run")
def study_run_cmd(
    spec: Path = typer.Argument(..., help="Study YAML."),
    tracking_uri: str | None = TRACKING_URI,
    executor: str | None = EXECUTOR,
    workers: int | None = WORKERS,
    gpu_fraction: float | None = GPU_FRACTION,
    ray_address: str | None = RAY_ADDRESS,
    cpus: float | None = CPUS,
    resource: list[str] = RESOURCE,
    quiet: bool = QUIET,
    metrics_port: int | None = METRICS_PORT,
    metrics_host: str = METRICS_HOST,
):
    """Run every trial of a study; finished runs are skipped, interrupted ones resume.

    A study with sequential seeds runs in rounds until its guide is decided."""
    given = dict(workers=workers, gpu_fraction=gpu_fraction, ray_address=ray_address, cpus=cpus, resources=resource)
    with metrics_endpoint(metrics_port, metrics_host):
        _study_run(spec, tracking_uri, executor, quiet, **given)


@study_app.command("extend")
def study_extend_cmd(
    spec: Path = typer.Argument(..., help="Study YAML."),
    seeds: int = typer.Option(..., "--seeds", min=1, help="Seeds to add to every configuration (the next unused)."),
    tracking_uri: str | None = TRACKING_URI,
    executor: str | None = EXECUTOR,
    workers: int | None = WORKERS,
    gpu_fraction: float | None = GPU_FRACTION,
    ray_address: str | None = RAY_ADDRESS,
    cpus: float | None = CPUS,
    resource: list[str] = RESOURCE,
    quiet: bool = QUIET,
):
    """Add seeds to every configuration by hand and run them.

    The same command again finishes an interrupted extension. Seeds added to a seed list after a look at the
    results are not corrected for (the report says so); on a sequential study they are one more look."""
    from oneml.study.sequential import extend_study
    from oneml.train.guard import interruptible

    study = _load(spec, tracking_uri)
    given = dict(workers=workers, gpu_fraction=gpu_fraction, ray_address=ray_address, cpus=cpus, resources=resource)
    options = _options(study, given)
    with interruptible():
        result = extend_study(study, seeds, executor, options, console=err, progress=not quiet)
    _status_table(study)
    out.print(f"steps trained this time: {result.steps_trained}")


@study_app.command("replicate")
def study_replicate_cmd(
    spec: Path = typer.Argument(..., help="Study YAML."),
    seeds: str = typer.Option(..., "--seeds", help="Fresh seeds for the replication, comma-separated: 100,101,102."),
    tracking_uri: str | None = TRACKING_URI,
    executor: str | None = EXECUTOR,
    workers: int | None = WORKERS,
    gpu_fraction: float | None = GPU_FRACTION,
    ray_address: str | None = RAY_ADDRESS,
    cpus: float | None = CPUS,
    resource: list[str] = RESOURCE,
    quiet: bool = QUIET,
):
    """Rerun the final configurations with fresh seeds; say whether each recommendation held.

    The replication is its own study, <name>-replicate; its table is written next to its report."""
    from oneml.study.replicate import parse_seeds, replicate_study
    from oneml.train.guard import interruptible

    chosen = parse_seeds(seeds)
    study = _load(spec, tracking_uri)
    given = dict(workers=workers, gpu_fraction=gpu_fraction, ray_address=ray_address, cpus=cpus, resources=resource)
    options = _options(study, given)
    with interruptible():
        rep = replicate_study(study, chosen, executor, options, console=err, progress=not quiet)
    table = Table(title=f"replication {rep.name} of {study.name}")
    for col in ("group", "priority", "before", "after", "outcome"):
        table.add_column(col)
    for r in rep.rows:
        table.add_row(*(escape(c) for c in (r.group, r.priority, r.before, r.after, r.outcome)))
    print_table(out, table)
    out.print(f"written: {rep.folder / 'replication.md'}, replication.csv and report.html", markup=False)


def _resources(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, amount = item.partition("=")
        try:
            out[name.strip()] = float(amount)
        except ValueError:
            raise OnemlError(f"--resource {item!r}: expected NAME=AMOUNT, e.g. --resource big_memory=1") from None
        if not name.strip() or out[name.strip()] <= 0:
            raise OnemlError(f"--resource {item!r}: expected NAME=AMOUNT with a positive amount")
    return out


def print_table(console: Console, table) -> None:
    """A table at its natural width when the output is not a terminal: a pipe or a file gets 80 columns from rich
    by default, which squeezes cells into '...' and hides the values that tell rows apart."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.measure import Measurement

    before = console.width
    console.width = 10_000  # rich clamps a print's width to the console's: widen it for this one table
    try:
        width = Measurement.get(console, console.options, table).maximum
        console.width = max(width, before)
        console.print(table)
    finally:
        console.width = before


def grid_text(grid: dict) -> str:
    """Values first: ``lora, r=8`` rather than ``method.name=lora, method.r=8`` (the method is the value itself)."""
    parts = []
    for key, value in grid.items():
        short = key.rsplit(".", 1)[-1]
        parts.append(str(value) if key in ("method", "method.name") else f"{short}={value}")
    return ", ".join(parts)


# resume takes exactly run's options: a rerun skips finished and pruned runs and continues the rest.
study_app.command("resume", help="Same as run: finished and pruned runs are skipped, the rest continue.")(study_run_cmd)


def _status_table(spec) -> None:
    from collections import Counter

    from oneml.study.run import study_status
    from oneml.study.sequential import planned

    rows = study_status(*(planned(spec) or (spec,)))  # a sequential or extended study: the trials its journal plans
    table = Table(title=f"study {spec.name}")
    for col in ("track", "grid", "seed", "run id", "state", "steps", "reason"):
        table.add_column(col)
    for r in rows:
        cells = (r["track"], grid_text(r["grid"]), str(r["seed"]), r["run_id"], r["state"], str(r["steps"]))
        table.add_row(*(escape(c) for c in (*cells, r["reason"])))
    print_table(out, table)
    counts = Counter(r["state"] for r in rows)
    out.print(", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@study_app.command("status")
def study_status_cmd(spec: Path = typer.Argument(..., help="Study YAML.")):
    """Each trial's state: finished, running, paused, failed (with the reason), pruned or pending.

    Read from the run root (tracking.root) alone: the study's journal and published runs, never the MLflow store."""
    from oneml.study import load_study

    _status_table(load_study(spec))


@study_app.command("export-argo")
def study_export_argo_cmd(
    spec: Path = typer.Argument(..., help="Study YAML."),
    output: Path = typer.Option(Path("workflow.yaml"), "--output", "-o", help="Manifest file to write."),
    image: str | None = typer.Option(
        None, "--image", help="Container image with oneml installed (default: oneml:<version>, what `make image` tags)."
    ),
    tracking_uri: str | None = TRACKING_URI,
    artifact_location: str | None = typer.Option(None, "--artifact-location", help="e.g. s3://bucket/oneml."),
    s3_endpoint: str | None = typer.Option(None, "--s3-endpoint", help="MLFLOW_S3_ENDPOINT_URL (MinIO, ...)."),
    s3_secret: str | None = typer.Option(
        None, "--s3-secret", help="Kubernetes Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
    ),
    cpu: str = typer.Option("4", "--cpu", help="CPU request per pod."),
    memory: str = typer.Option("16Gi", "--memory", help="Memory request and limit per pod."),
    gpus: int = typer.Option(0, "--gpus", min=0, help="nvidia.com/gpu per pod."),
    parallelism: int | None = typer.Option(None, "--parallelism", min=1, help="Pods at once (default: workers)."),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Kubernetes namespace."),
    service_account: str | None = typer.Option(None, "--service-account", help="Service account of the pods."),
    metrics_port: int = typer.Option(
        8000, "--metrics-port", min=0, max=65535, help="Port each pod serves Prometheus metrics on (0: none)."
    ),
):
    """Write an Argo Workflows manifest of the study: one pod per run, each running `oneml train`.

    The pods record to an MLflow server they can reach: --tracking-uri, else the study's tracking.uri, else
    $MLFLOW_TRACKING_URI."""
    from oneml.study import load_study
    from oneml.study.argo import IMAGE, ArgoOptions, to_yaml, workflow
    from oneml.study.spec import study_tracking_uri

    study = load_study(spec)
    uri = tracking_uri or study_tracking_uri(study) or os.environ.get("MLFLOW_TRACKING_URI", "")
    options = ArgoOptions(
        image or IMAGE, uri, artifact_location, s3_endpoint, s3_secret, cpu, memory, gpus, parallelism, namespace,
        service_account, metrics_port or None,
    )  # fmt: skip
    manifest = workflow(study, options)
    try:
        output.write_text(to_yaml(manifest, study.name))
    except OSError as exc:
        raise OnemlError(f"--output: cannot write {output}: {exc.strerror or exc}") from None
    runs = len(manifest["spec"]["templates"]) - 1
    out.print(f"{output}: {runs} runs; submit with: argo submit {output} --watch", markup=False, highlight=False)


@study_app.command("_trial", hidden=True)
def study_trial_cmd(job: Path, outcome: Path):
    """One trial in a worker process: reads a job JSON, writes the outcome JSON."""
    import json

    from oneml.study.trial import run_trial
    from oneml.train.checkpoints import write_json

    spec = json.loads(job.read_text())
    write_json(outcome, run_trial(spec["config"], spec["stop_at"]))
