"""The `oneml` command: thin commands over library functions.

Every user error is one line on stderr with exit code 2; no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from oneml.cli_options import ROOT, TRACKING_URI
from oneml.cli_study import METRICS_HOST, METRICS_PORT, metrics_endpoint, print_table, study_app
from oneml.errors import Interrupted, OnemlError

app = typer.Typer(
    help="Fine-tune causal LMs with parameter-efficient methods, and choose among them with evidence.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)


@app.command("train")
def train_cmd(
    config: Path | None = typer.Argument(None, help="Run config YAML (default: LoRA on the embedded model)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a config key: --set method.r=8 (repeatable)."),
    tracking_uri: str | None = TRACKING_URI,
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    launcher: str | None = typer.Option(None, "--launcher", help="accelerate or torchrun: one run, many processes."),
    nproc: int | None = typer.Option(None, "--nproc", min=1, help="Processes per node (distributed.nproc)."),
    nnodes: int | None = typer.Option(None, "--nnodes", min=1, help="Nodes (distributed.nnodes)."),
    node_rank: int | None = typer.Option(None, "--node-rank", min=0, help="This node's rank (distributed.node_rank)."),
    master_addr: str | None = typer.Option(None, "--master-addr", help="Node 0's address (distributed.master_addr)."),
    master_port: int | None = typer.Option(None, "--master-port", help="Rendezvous port (distributed.master_port)."),
    strategy: str | None = typer.Option(None, "--strategy", help="ddp, fsdp, zero2 or zero3 (distributed.strategy)."),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="With --launcher: write the generated configs, print the launch command, start nothing.",
    ),
    metrics_port: int | None = METRICS_PORT,
    metrics_host: str = METRICS_HOST,
):
    """Fine-tune one model with one method; record the run in MLflow."""
    from oneml.config import load_run_config
    from oneml.distributed import world

    overrides = list(set_) + ([f"tracking.uri={tracking_uri}"] if tracking_uri else [])
    given = dict(launcher=launcher, nproc=nproc, nnodes=nnodes, node_rank=node_rank, master_addr=master_addr)
    given |= dict(master_port=master_port, strategy=strategy)
    overrides += [f"distributed.{k}={v}" for k, v in given.items() if v is not None]
    cfg = load_run_config(config, overrides)
    if print_config:
        import yaml

        out.print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="", markup=False, highlight=False)
        out.print(f"# run id: {cfg.run_id}", markup=False, highlight=False)
        return
    with metrics_endpoint(None if dry_run else metrics_port, metrics_host):
        if cfg.distributed.launcher != "none" and not world.launched():
            return _launch(cfg, quiet, dry_run)
        _train(cfg, quiet)


def _train(cfg, quiet: bool) -> None:
    from oneml.distributed import world
    from oneml.train import train
    from oneml.train.summary import summary_table

    result = train(cfg, progress=not quiet, console=err)
    world.finish()
    if not world.current().is_main:
        return
    out.print(summary_table(result))
    uri = result.tracking_uri
    out.print(f"open the MLflow UI with: oneml ui{'' if 'oneml-runs' in uri else ' --tracking-uri ' + uri}")


def _launch(cfg, quiet: bool, dry_run: bool) -> None:
    """Check the run here (a bad value fails before any process starts), then start it under its launcher."""
    import shlex

    from oneml.distributed import launch, strategies
    from oneml.train.runner import resolve_device

    try:
        strategies.check(cfg, resolve_device(cfg.train.device))
    except OnemlError as problem:
        if not dry_run:
            raise
        err.print(f"note: {problem}", markup=False, highlight=False)  # a dry run still shows what it would start
    plan = launch.prepare(cfg, quiet=quiet)
    for role, path in plan.files.items():
        err.print(f"{role}: {path}", markup=False, highlight=False)
    if dry_run:
        out.print(shlex.join(plan.command), markup=False, highlight=False, soft_wrap=True)
        return
    code = launch.run(plan)
    if code:
        err.print(f"the {cfg.distributed.launcher} run exited with code {code}; its processes' messages are above")
        raise typer.Exit(code)


@app.command("keys")
def keys_cmd(section: str | None = typer.Argument(None, help="Only this section: model, method, data, ...")):
    """List every config key with its type, default and meaning (from the config schema itself)."""
    from oneml.config import RunConfig, describe_keys

    table = Table("key", "type", "default", "meaning")
    rows = describe_keys()
    if section is not None:
        rows = [r for r in rows if r[0].replace("[", ".").split(".")[0] == section]
        if not rows:
            raise OnemlError(f"section: unknown section {section!r}; one of {', '.join(RunConfig.model_fields)}")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    print_table(out, table)


@app.command("models")
def models_cmd():
    """List the model catalogue (any hub id or local directory works too)."""
    from oneml.models import MODELS

    table = Table("name", "kind", "origin", "description")
    for entry in MODELS.entries():
        preset = entry.value
        table.add_row(entry.name, preset.kind, preset.hub_id or "built in memory", entry.description)
    out.print(table)
    out.print("Also: any Hugging Face hub id (org/name) or local model directory.")


@app.command("datasets")
def datasets_cmd():
    """List the dataset catalogue (any local json/jsonl/csv/parquet file works too)."""
    from oneml.data import DATASETS
    from oneml.data.formats import FORMATS

    table = Table("name", "format", "origin", "description")
    for entry in DATASETS.entries():
        src = entry.value
        table.add_row(entry.name, src.format, src.origin, entry.description)
    out.print(table)
    out.print(f"Also: a local .json/.jsonl/.csv/.parquet file (formats: {', '.join(FORMATS.names())}).")


@app.command("methods")
def methods_cmd(
    markdown: bool = typer.Option(False, "--markdown", help="Print the README's method table (Markdown) instead."),
):
    """List the fine-tuning methods, fewest trained parameters first (counted on the embedded default model)."""
    from oneml.methods import OBJECTIVE_REFUSALS
    from oneml.methods.listing import DEFAULT_MODEL, count, rows
    from oneml.methods.listing import markdown as table_markdown

    if markdown:
        sys.stdout.write(table_markdown())
        return
    with out.status(f"counting trained parameters on {DEFAULT_MODEL}"):
        listed = rows()
    table = Table("name", f"trains on {DEFAULT_MODEL}", "merges", "4-bit base", "simplicity (rank: why)", "what")
    for r in listed:
        table.add_row(r.name, count(r.params), r.merges, r.quantized, escape(f"{r.rank:g}: {r.why}"), escape(r.what))
    print_table(out, table)
    for (method, objective), reason in OBJECTIVE_REFUSALS.items():
        out.print(escape(f"not trainable: {method} with {objective} ({reason})"))
    out.print("Also: method: {name: peft, type: <PeftType>, config: {...}} trains any other peft tuner.")


@app.command("objectives")
def objectives_cmd(
    markdown: bool = typer.Option(False, "--markdown", help="Print the README's objective table (Markdown) instead."),
):
    """List the training objectives: the data each needs, its reference, what it trains, its keys."""
    from oneml.objectives.listing import markdown as table_markdown
    from oneml.objectives.listing import rows

    if markdown:
        sys.stdout.write(table_markdown())
        return
    table = Table("name", "data", "reference", "trains", "keys", "what")
    for r in rows():
        table.add_row(r.name, r.data, r.reference, r.result, escape(", ".join(r.keys) or "-"), escape(r.what))
    print_table(out, table)
    for r in rows():
        if r.refused:
            out.print(escape(f"{r.name}: not with {', '.join(r.refused)} (`oneml methods` says why)"))


@app.command("benchmarks")
def benchmarks_cmd():
    """List the benchmarks of `oneml eval`, and the instruction types ifeval scores."""
    import oneml.eval.bench  # noqa: F401 - registers the benchmarks
    from oneml.eval import ifbench_checks
    from oneml.eval.benchmarks import BENCHMARKS

    table = Table("name", "description")
    for entry in BENCHMARKS.entries():
        table.add_row(entry.name, entry.description)
    table.add_row("lm-eval:<task>", "Any lm-eval-harness task (local task YAMLs with --lm-eval-include)")
    out.print(table)
    supported = ifbench_checks.supported()
    out.print(f"ifeval scores {len(supported)} instruction types: {', '.join(supported)}")
    for name, reason in sorted(ifbench_checks.UNSUPPORTED.items()):
        out.print(f"  not scored: {name} ({reason})")


@app.command("runs")
def runs_cmd(
    root: Path = ROOT,
    tracking_uri: str | None = TRACKING_URI,
    experiment: str | None = typer.Option(None, "--experiment", help="Only this MLflow experiment."),
    limit: int = typer.Option(50, "--limit", min=1, help="Show at most this many runs."),
):
    """List tracked runs, newest first."""
    from oneml.tracking import list_runs, resolve_tracking_uri
    from oneml.tracking import tags as tag

    uri = resolve_tracking_uri(tracking_uri, root)
    if uri.startswith("sqlite:") and not (root / "mlflow.db").is_file():
        raise OnemlError(f"--root: no runs recorded under {root.resolve()} (no mlflow.db)")
    runs = list_runs(uri, experiment, limit)
    table = Table("run id", "status", "model", "method", "seed", "eval loss", "before", "tok acc", "tokens/s", "time s")
    for r in runs:
        m, t = r["metrics"], r["tags"]
        parent = t.get(tag.STUDY_PARENT, "").lower() == "true"  # a study's own record: no model, no result
        table.add_row(
            t.get(tag.RUN_ID, r["mlflow_run_id"][:12]),
            r["status"],
            f"study {t.get(tag.STUDY, '?')}" if parent else t.get(tag.MODEL, "-"),
            "(all its trials)" if parent else t.get(tag.METHOD, "-"),
            "" if parent else t.get(tag.SEED, "-"),
            *(
                _num(m.get(k), s)
                for k, s in (
                    ("eval_loss", ".4f"),
                    ("initial_eval_loss", ".4f"),
                    ("eval_token_accuracy", ".3f"),
                    ("tokens_per_second", ",.0f"),
                    ("train_wall_seconds", ".1f"),
                )
            ),
        )
    print_table(out, table)
    out.print(f"{len(runs)} run(s) in {uri}")


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _priorities() -> str:
    from oneml.analysis.decision import PRIORITIES

    return ", ".join(PRIORITIES.names())


def _analysis_options(
    metric: str | None, alpha: float | None, margin: str | None, weights: str | None, bootstrap: bool
):
    from oneml.analysis import DecisionOptions, parse_margin, parse_weights

    interval = "bootstrap" if bootstrap else "t"
    chosen = parse_margin(margin, "--margin") if margin is not None else None
    return DecisionOptions(metric, alpha, 0.95, chosen, interval, parse_weights(weights))


def _quality_metrics() -> str:
    from oneml.analysis.metrics import METRICS

    return ", ".join(k for k, m in METRICS.items() if not m.cost)


def _criteria() -> str:
    from oneml.analysis.decision import DEFAULT_WEIGHTS

    return ", ".join(DEFAULT_WEIGHTS)


METRIC_HELP = f"Quality metric the decisions start from: {_quality_metrics()}, bench/<name> (a benchmark score). "
METRIC_HELP += "Default: test_loss where runs recorded a test split, else eval_loss."
WEIGHTS_HELP = f"Starting-point weights: quality=2,memory=1,... or a YAML file (criteria: {_criteria()})."
MARGIN_HELP = "Equivalence margin: '1%' of the best mean, or metric units (0.02). Default: the study's, else 1%."
ALPHA_HELP = "Chance of any wrong verdict per group, shared among all pairs of configurations. Default 0.05; a "
ALPHA_HELP += "sequential study's last look uses its own share of it."


@app.command("report")
def report_cmd(
    studies: list[str] = typer.Argument(None, help="Study name(s); two or more are put side by side."),
    compare: list[str] = typer.Option([], "--compare", help="Another study to put side by side (repeatable)."),
    experiment: list[str] = typer.Option([], "--experiment", help="Runs of this MLflow experiment (repeatable)."),
    root: Path = ROOT,
    tracking_uri: str | None = TRACKING_URI,
    out_dir: Path | None = typer.Option(None, "--out", help="Output folder (default: <root>/reports/<study>)."),
    metric: str | None = typer.Option(None, "--metric", help=METRIC_HELP),
    alpha: float | None = typer.Option(None, "--alpha", min=0.0001, max=0.5, help=ALPHA_HELP),
    margin: str | None = typer.Option(None, "--margin", help=MARGIN_HELP),
    weights: str | None = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    bootstrap: bool = typer.Option(False, "--bootstrap", help="Bootstrap confidence intervals instead of t."),
):
    """Write the decision report (HTML, Markdown, CSV) of one or more studies from their tracked results."""
    from oneml.analysis import default_out, write_report
    from oneml.analysis.results import load_many
    from oneml.tracking import resolve_tracking_uri

    options = _analysis_options(metric, alpha, margin, weights, bootstrap)
    results = load_many(list(studies or []) + list(compare), list(experiment), resolve_tracking_uri(tracking_uri, root))
    folder = out_dir or default_out(root, [s.name for s in results])
    files = write_report(results, folder, options)
    out.print(f"report: {files['report.html'].resolve()}", markup=False, highlight=False)
    out.print(f"also: {', '.join(n for n in files if n != 'report.html')} and figures/ in {folder}", markup=False)


@app.command("recommend")
def recommend_cmd(
    study: str | None = typer.Argument(None, help="Study name."),
    priority: str = typer.Option("start", "--priority", "-p", help=f"One of: {_priorities()}."),
    experiment: str | None = typer.Option(None, "--experiment", help="Runs of this MLflow experiment instead."),
    root: Path = ROOT,
    tracking_uri: str | None = TRACKING_URI,
    metric: str | None = typer.Option(None, "--metric", help=METRIC_HELP),
    alpha: float | None = typer.Option(None, "--alpha", min=0.0001, max=0.5, help=ALPHA_HELP),
    margin: str | None = typer.Option(None, "--margin", help=MARGIN_HELP),
    weights: str | None = typer.Option(None, "--weights", help=WEIGHTS_HELP),
):
    """Print the recommended configuration for one priority, and why."""
    from rich.panel import Panel

    from oneml.analysis import PRIORITIES, analyse_study, recommend
    from oneml.analysis.results import load_many
    from oneml.tracking import resolve_tracking_uri

    PRIORITIES.entry(priority)  # an unknown priority fails before the store is read
    options = _analysis_options(metric, alpha, margin, weights, False)
    uri = resolve_tracking_uri(tracking_uri, root)
    results = load_many([study] if study else [], [experiment] if experiment else [], uri)[0]
    for a in analyse_study(results, options):
        r = recommend(a, priority)
        body = f"[bold]{escape(r.winner)}[/]" if r.winner else escape(_no_winner(r))
        body += f"\n{escape(r.numbers)}\n\n[dim]verdict:[/] {r.verdict}"
        body += f"\n[dim]why:[/] {escape(r.evidence)}\n[dim]rule:[/] {escape(r.rule)}"
        title = f"{r.title} · {results.name} · {' · '.join(a.group)}"
        out.print(Panel(body, title=escape(title), title_align="left", expand=False))


def _no_winner(r) -> str:
    if r.verdict == "inconclusive":
        return f"no winner yet: {' / '.join(r.candidates)} cannot be separated"
    return "no recommendation"


@app.command("eval")
def eval_cmd(
    run: str = typer.Argument(
        ..., help="Run id (or a unique prefix) under --root or in the tracking store, or a run folder."
    ),
    benchmarks: str = typer.Option(
        "perplexity,eos,inference",
        "--benchmarks",
        "-b",
        help="Comma-separated benchmark names (the list: `oneml benchmarks`), or lm-eval:<task>.",
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Score at most N items per benchmark."),
    shots: int | None = typer.Option(None, "--shots", min=0, help="Few-shot examples (gsm8k default 8)."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1, help="Generation budget per item."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Prompts generated or scored together."),
    data: list[str] = typer.Option([], "--data", help="Local stand-in for a benchmark's data: NAME=FILE (repeatable)."),
    hub: bool = typer.Option(
        False, "--hub", help="Read GSM8K from the Hugging Face hub (default: package index copy)."
    ),
    lm_eval_include: Path | None = typer.Option(None, "--lm-eval-include", help="Folder of local lm-eval task YAMLs."),
    judge: str | None = typer.Option(
        None, "--judge", help="winrate's judge: a model (preset, hub id, directory) or an endpoint http://host:port/v1."
    ),
    against: str = typer.Option("base", "--against", help="winrate's opponent: base, reference, or a run id."),
    judge_model: str | None = typer.Option(None, "--judge-model", help="The endpoint's model (default: its first)."),
    judge_key_env: str | None = typer.Option(
        None, "--judge-key-env", help="Environment variable holding the endpoint's API key."
    ),
    judge_budget: int | None = typer.Option(None, "--judge-budget", help="At most N judge requests (retries count)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    root: Path = ROOT,
    tracking_uri: str | None = TRACKING_URI,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
):
    """Score a trained run on benchmarks; scores go to the run's MLflow record and <run>/eval/.

    A run id found only in the tracking store (a run trained elsewhere) is downloaded under --root first."""
    from oneml.eval.benchmarks import EvalOptions
    from oneml.eval.judges import JudgeOptions
    from oneml.eval.run import evaluate_run

    files = {}
    for item in data:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise OnemlError(f"--data: expected NAME=FILE, got {item!r}")
        files[name.strip()] = Path(path).expanduser()
    options = EvalOptions(limit, shots, max_new_tokens, batch_size, files, hub, lm_eval_include)
    if judge is not None:
        options.judge = JudgeOptions(judge, against, judge_model, judge_key_env, judge_budget, root=root)
    elif against != "base" or judge_model or judge_key_env or judge_budget is not None:
        raise OnemlError("--against/--judge-model/--judge-key-env/--judge-budget: only with --judge")
    names = [b for b in benchmarks.split(",") if b.strip()]
    report = evaluate_run(run, names, options, root=root, tracking_uri=tracking_uri, device=device, console=err,
                          progress=not quiet)  # fmt: skip
    table = Table("metric", "value")
    for key, value in report.metrics.items():
        table.add_row(key, f"{value:.4g}")
    out.print(table)
    if "eos" in report.results:
        out.print(f"generation check: {report.results['eos'].details['verdict']}")
    for name, result in report.results.items():
        if result.section is not None:
            out.print(f"{name}: {judged_summary(result.details)}")
    where = f"MLflow run {report.mlflow_run_id}" if report.mlflow_run_id else "no MLflow record found for this run"
    err.print(f"recorded: {where}; details under {root / 'runs' / report.run_id / 'eval'}")


def judged_summary(d: dict) -> str:
    """A pairwise benchmark's result in one line: the rates with their intervals, what was judged, what failed."""
    stats = d.get("statistics")
    head = (
        f"LC win rate {stats['lc_win_rate']:.3f} [{stats['lc_low']:.3f}, {stats['lc_high']:.3f}], win rate "
        f"{stats['win_rate']:.3f} [{stats['win_low']:.3f}, {stats['win_high']:.3f}] vs {d['opponent']}"
        if stats
        else f"no win rate vs {d['opponent']}"
    )
    tail = f"; stopped early: {d['stopped_early']}" if d.get("stopped_early") else ""
    return (
        f"{head}; {d['prompts_judged']} of {d['prompts']} prompts judged in both orders by {d['judge']}, "
        f"{d['parse_failures']} unreadable judgment(s), {d['request_failures']} failed request(s){tail}"
        + (f"; {d['warning']}" if d.get("warning") else "")
    )


@app.command("export")
def export_cmd(
    run: str = typer.Argument(
        ..., help="Run id (or a unique prefix) under --root or in the tracking store, or a run folder."
    ),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder to write (must be empty or new)."),
    mode: str = typer.Option("merged", "--mode", help="merged (a plain transformers model) or adapter (peft)."),
    dtype: str | None = typer.Option(None, "--dtype", help="Save merged weights as float32, bfloat16 or float16."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out folder."),
    root: Path = ROOT,
    tracking_uri: str | None = TRACKING_URI,
):
    """Export a trained run: merged safetensors model or the adapter alone, with a model card.

    A run id found only in the tracking store (a run trained elsewhere) is downloaded under --root first."""
    from oneml.export import export_run
    from oneml.train.runner import quiet_libraries

    quiet_libraries()
    done = export_run(
        run, out_dir, mode=mode, root=root, dtype=dtype, force=force, console=err, tracking_uri=tracking_uri
    )
    out.print(f"exported {done.mode} model to {done.folder}: {', '.join(done.files)}")


@app.command("ui")
def ui_cmd(
    root: Path = ROOT,
    tracking_uri: str | None = TRACKING_URI,
    port: int = typer.Option(5000, "--port", min=1, max=65535, help="Port on 127.0.0.1."),
):
    """Open the MLflow UI on the runs (bound to 127.0.0.1 only)."""
    import subprocess

    from oneml.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, root)
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI; `mlflow ui` needs a database
        out.print(f"the MLflow server serves its UI itself: open {uri}", markup=False, highlight=False)
        return
    err.print(f"MLflow UI for {uri} at http://127.0.0.1:{port} (Ctrl-C to stop)")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", uri]
    raise typer.Exit(subprocess.call(cmd))


app.add_typer(study_app, name="study")


def main(argv: list[str] | None = None) -> None:
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="oneml", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except OnemlError as exc:
        from rich.text import Text

        err.print(Text("error: ", style="bold red") + Text(str(exc)), highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Interrupted as exc:  # SIGTERM during a run: exit 128 + the signal's number
        err.print(str(exc), markup=False, highlight=False)
        sys.exit(exc.exit_code)
    except Exception as exc:
        # typer 0.29 vendors its own click, whose usage errors (a missing option, a bad integer) are not the
        # `click` package's classes caught above: recognise them by their interface, and say them in one line.
        if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
            raise
        err.print(f"error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    if isinstance(code, int) and code:  # outside standalone mode typer returns exit codes (Ctrl-C: 130)
        if code == 130:
            err.print("interrupted")
        sys.exit(code)


if __name__ == "__main__":
    main()
