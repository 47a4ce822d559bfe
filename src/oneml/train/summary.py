"""The table shown at the end of a run."""

from __future__ import annotations

from oneml.train.runner import RunResult


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# (label, metric name without the eval_ prefix, format): shown when the objective reports the metric.
_QUALITY_ROWS = [
    ("eval loss", "loss", ".4f"),
    ("perplexity", "perplexity", ".3f"),
    ("token accuracy", "token_accuracy", ".4f"),
    ("preference accuracy", "preference_accuracy", ".3f"),
    ("reward margin", "reward_margin", ".4f"),
    ("label accuracy", "label_accuracy", ".3f"),
    ("KL to reference", "kl_ref", ".4f"),
    ("log odds ratio", "log_odds_ratio_mean", ".4f"),
    ("SFT loss part", "sft_loss", ".4f"),
]


def _with_before(m: dict[str, float], key: str, spec: str) -> str:
    text = format(m[f"eval_{key}"], spec)
    before = m.get(f"initial_eval_{key}")
    return text if before is None else f"{text}  (before {format(before, spec)})"


def summary_table(result: RunResult):
    from rich.table import Table

    m = result.metrics
    cfg = result.config
    table = Table(title=f"run {result.run_id}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    if cfg is not None:
        table.add_row("model / method", f"{cfg.model.name} / {cfg.method.name} ({cfg.objective.name})")
        stats = result.data_stats
        test = f", {stats['test_rows']} test" if stats.get("test_rows") else ""
        rows = f"{stats.get('train_rows')} train, {stats.get('eval_rows')} eval{test} rows"
        table.add_row("data", f"{cfg.data.dataset}: {rows}")
    table.add_row(
        "trainable params",
        f"{m.get('trainable_params', 0):,.0f} of {m.get('total_params', 0):,.0f} "
        f"({m.get('trainable_percent', 0):.3f}%)",
    )
    for label, key, spec in _QUALITY_ROWS:
        if f"eval_{key}" in m:
            table.add_row(label, _with_before(m, key, spec))
    for label, key, spec in _QUALITY_ROWS:  # the rows nothing selected on, when the run has a test split
        if f"test_{key}" in m:
            table.add_row(f"test {label.removeprefix('eval ')}", format(m[f"test_{key}"], spec))
    table.add_row("steps / time", f"{m['steps']:.0f} steps in {m['train_wall_seconds']:.1f} s")
    if "best_step" in m and cfg is not None and cfg.train.early_stopping is not None:
        ended = f"stopped early at step {m['steps']:.0f}" if m.get("stopped_early") else "ran to max_steps"
        best = f"best {cfg.train.early_stopping.metric} at step {m['best_step']:.0f}"
        table.add_row("early stopping", f"{ended} of {cfg.train.max_steps}; {best} (the weights kept)")
    table.add_row("tokens/s", f"{_fmt(m.get('tokens_per_second'), ',.0f')} (real tokens, no padding)")
    memory = f"{m['peak_rss_mib']:,.0f} MiB RSS"
    if "peak_cuda_mib" in m:
        memory += f", {m['peak_cuda_mib']:,.0f} MiB CUDA"
    table.add_row("peak memory", memory)
    table.add_row("run directory", str(result.run_dir))
    table.add_row("mlflow", f"{result.tracking_uri}  (run {result.mlflow_run_id})")
    return table
