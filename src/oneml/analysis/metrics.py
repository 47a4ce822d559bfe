"""The metrics the analysis knows: their direction (is higher better?) and how to show them.

A name is written down once, here; tables, statistics, decisions and figures look it up. Downstream
benchmarks (`bench/<name>`) are scores, higher is better, and are recognised by their prefix;
`bench-lower/<name>` values are better lower.
Two metrics are derived at load time (see `results.py`): `peak_memory_mib` (the CUDA peak when the run
had a GPU, else the resident-set peak) and `train_loss_auc` (the mean training loss over the run).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str
    """The MLflow metric name (or a derived one)."""
    label: str
    higher_is_better: bool
    fmt: str = ".4f"
    """Format spec for one value."""
    cost: bool = False
    """What a result costs (size, memory, time) rather than how good it is: shown in its own table."""

    def better(self, a: float, b: float) -> bool:
        """True when ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def show(self, value: float | None) -> str:
        if value is None or value != value:  # NaN
            return "-"
        return format(value, self.fmt)


EVAL_PREFIX, TEST_PREFIX = "eval_", "test_"
"""A run with a test split (data.test_size / data.test_fraction) records every eval_* metric of its final
evaluation again as test_*, scored on rows that nothing selected on."""

_QUALITY = (
    Metric("eval_loss", "eval loss", False),
    Metric("eval_perplexity", "perplexity", False, ".3f"),
    Metric("eval_token_accuracy", "token accuracy", True),
    Metric("eval_preference_accuracy", "preference accuracy", True),
    Metric("eval_reward_margin", "reward margin", True),
    Metric("eval_logp_accuracy", "log-prob accuracy", True),
    Metric("eval_label_accuracy", "label accuracy", True),
)
# The test twins are derived, not written out again: the same direction and format, "test loss", "test perplexity".
_TEST = tuple(
    Metric(
        TEST_PREFIX + m.key.removeprefix(EVAL_PREFIX),
        "test " + m.label.removeprefix("eval "),
        m.higher_is_better,
        m.fmt,
    )
    for m in _QUALITY
)
_TABLE = (
    *_QUALITY,
    *_TEST,
    Metric("trainable_params", "trainable params", False, ",.0f", cost=True),
    Metric("trainable_percent", "trainable %", False, ".3f", cost=True),
    Metric("peak_memory_mib", "peak memory (MiB)", False, ",.0f", cost=True),
    Metric("tokens_per_second", "tokens/s", True, ",.0f", cost=True),
    Metric("train_wall_seconds", "wall time s", False, ",.1f", cost=True),
    Metric("steps_to_threshold", "steps to threshold", False, ",.0f", cost=True),
    Metric("steps", "steps run", False, ",.0f", cost=True),
    Metric("best_step", "best step", False, ",.0f", cost=True),
    Metric("train_loss_auc", "mean train loss", False, cost=True),
    Metric("inference_ms_per_token", "ms/token (adapter)", False, ".2f", cost=True),
    Metric("inference_merged_ms_per_token", "ms/token (merged)", False, ".2f", cost=True),
    Metric("inference_peak_mib", "inference peak MiB", False, ",.0f", cost=True),
)
METRICS: dict[str, Metric] = {m.key: m for m in _TABLE}
BENCH_PREFIX = "bench/"
BENCH_LOWER_PREFIX = "bench-lower/"
"""Benchmark values where lower is better (a perplexity): `oneml eval` records them under this prefix."""


LOSS_METRICS = ("eval_loss", "eval_perplexity")
"""Metrics whose meaning an objective's settings (beta, lambda, loss type) change, like their test twins."""


def defines_loss(param: str) -> bool:
    """An objective setting (``objective.beta``, ``objective.lambda``, ...): each weights, scales or reshapes the
    loss, so runs that differ in one do not measure the same thing with it. The objective's name is not one: a
    different objective is another group altogether."""
    return param.startswith("objective.") and param != "objective.name"


def is_loss(key: str) -> bool:
    """A loss metric (or its perplexity), on the validation or the test rows."""
    return key in LOSS_METRICS or any(key == test_key(k) for k in LOSS_METRICS)


JUDGED_RATES = {"lc_win_rate": "LC win rate", "win_rate": "win rate"}
"""What a pairwise benchmark records per opponent: bench/<benchmark>/<opponent>/<rate> (oneml.eval.bench.winrate)."""


def metric(key: str) -> Metric:
    """The metric named ``key``; unknown names (e.g. a new benchmark) are scores where higher is better."""
    if key in METRICS:
        return METRICS[key]
    parts = key.split("/")
    if len(parts) == 4 and parts[0] + "/" == BENCH_PREFIX and parts[3] in JUDGED_RATES:
        return Metric(key, f"{parts[1]} {JUDGED_RATES[parts[3]]} vs {parts[2]}", True)
    if key.startswith(BENCH_LOWER_PREFIX):
        return Metric(key, key[len(BENCH_LOWER_PREFIX) :], False)
    label = key[len(BENCH_PREFIX) :] if key.startswith(BENCH_PREFIX) else key
    return Metric(key, label, True)


def test_key(key: str) -> str | None:
    """The test twin of an eval metric (eval_loss -> test_loss); None for a name that is not an eval metric."""
    return TEST_PREFIX + key.removeprefix(EVAL_PREFIX) if key.startswith(EVAL_PREFIX) else None


test_key.__test__ = False  # type: ignore[attr-defined]  # pytest would collect it from a test module importing it


def summary_keys(available: set[str]) -> list[str]:
    """The metrics worth summarising per configuration, in display order, limited to those recorded."""
    bench = sorted(k for k in available if k.startswith((BENCH_PREFIX, BENCH_LOWER_PREFIX)))
    hidden = set() if "best_step" in available else set(STOPPING_ONLY)
    return [k for k in METRICS if k in available and k not in hidden] + bench


STOPPING_ONLY = ("steps",)
"""Shown only where early stopping ran (runs record ``best_step``): without it every run ran its budget."""
