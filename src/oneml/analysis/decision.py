"""The decision guide: one recommended configuration per priority, each with its numbers and its test.

Configurations are compared within one *group* (same model, objective and dataset: elsewhere a loss
means something else). The quality metric is ``eval_loss`` unless the user picks another (token accuracy,
a downstream benchmark ``bench/<name>``); alpha defaults to 0.05 and the tolerance to 2%.

First, every configuration is tested against the best one on the quality metric (paired t-test over
shared seeds, Holm-corrected across the family; see `stats.py`). The *contenders* are the best one, those
whose difference from it is not distinguishable (corrected p >= alpha), and those that cannot be tested
(one run, no shared seeds) but whose mean lies within the tolerance of the best mean. The rules:

- performance: the best mean on the quality metric; the test shown is the runner-up against it.
  "Not distinguishable" is said plainly when the corrected p >= alpha: then other priorities decide.
- stability: among contenders with two or more seeds, the lowest coefficient of variation of the quality
  metric across seeds (ties: lower std). Spread is compared descriptively; a Brown-Forsythe p-value is shown
  but few seeds rarely separate spreads.
- simplicity: among contenders, the lowest rank in `METHOD_COMPLEXITY` (ties: fewer trainable parameters).
- convergence: fewest mean `steps_to_threshold` among configurations that reached the threshold in every
  seed; when no configuration recorded it, the lowest mean training loss over the run (area under the
  train-loss curve / steps). Tested against the runner-up; a winner significantly worse than the best on
  quality is flagged as such.
- memory: lowest mean peak memory (CUDA peak when recorded, else resident set) among configurations whose
  mean quality lies within the tolerance of the best mean.
- preference: the best mean `eval_preference_accuracy`, tested against the runner-up; "no preference runs"
  when none recorded it.
- start: the contender with the highest weighted score. Each criterion (quality, stability, simplicity,
  convergence, memory, speed, preference) is scaled to [0, 1] over the contenders (1 = best; all equal
  = 1; not recorded = 0); criteria nobody recorded drop out. Weights default to `DEFAULT_WEIGHTS` and can
  be changed per criterion (`--weights quality=2,memory=1` or a YAML mapping); unnamed ones keep theirs.
  Ties go to the simpler method. The starting point is never significantly worse than the best.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from oneml.analysis.metrics import Metric, metric
from oneml.analysis.results import Configuration, StudyResults
from oneml.analysis.stats import Comparison, Summary, against_best, brown_forsythe, compare, summarize
from oneml.errors import OnemlError
from oneml.registry import Registry

# Simplest first. The rank counts what a team must get right and keep running: extra hyperparameters,
# special initialisation or schedules, and what has to be stored and served. Runs are ranked by their
# oneml.method tag, so a LoRA option (rsLoRA as `use_rslora`) ranks as lora; "rslora" covers a run tagged so.
METHOD_COMPLEXITY: dict[str, tuple[int, str]] = {
    "lora": (1, "rank, alpha, targets: the reference recipe, supported everywhere"),
    "loraplus": (2, "LoRA plus one learning-rate ratio for B"),
    "rslora": (3, "LoRA with rank-stabilised scaling: one switch, but ranks/alphas no longer transfer as-is"),
    "dora": (4, "LoRA plus a learned magnitude vector: slower steps, merge needs care"),
    "pissa": (5, "LoRA initialised from an SVD of the weights: init cost, base must be converted to export"),
    "qlora": (6, "LoRA over a 4-bit base: quantisation settings and kernels to keep in step"),
    "sorsa": (7, "SVD-initialised adapter with an orthogonality regulariser and its weight"),
    "adalora": (8, "rank budget schedule (initial/target rank, warm-up, interval): most knobs of the LoRA family"),
    "prefix": (9, "virtual tokens per layer: changes the attention cache, no merge"),
    "bottleneck": (10, "new modules in every block: inference code must carry them, no merge"),
    "full": (11, "a full copy of the weights per task: largest memory, checkpoints and serving cost"),
}
UNKNOWN_COMPLEXITY = len(METHOD_COMPLEXITY) + 1

DEFAULT_WEIGHTS: dict[str, float] = {
    "quality": 3.0,
    "stability": 1.0,
    "simplicity": 1.0,
    "convergence": 1.0,
    "memory": 1.0,
    "speed": 1.0,
    "preference": 2.0,
}
PREFERENCE = "eval_preference_accuracy"
MEMORY = "peak_memory_mib"


@dataclass(frozen=True)
class DecisionOptions:
    metric: str = "eval_loss"
    """The quality metric every rule starts from."""
    alpha: float = 0.05
    confidence: float = 0.95
    tolerance: float = 0.02
    """Relative distance from the best mean quality that still counts as "as good" (memory rule, untested runs)."""
    interval: str = "t"
    """Confidence intervals of the per-configuration summaries: 't' or 'bootstrap'."""
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))


@dataclass
class Analysis:
    """One comparable group of configurations, summarised and tested."""

    group: tuple[str, str, str]
    configs: dict[str, Configuration]
    options: DecisionOptions
    summaries: dict[str, dict[str, Summary]]
    best: str
    comparisons: list[Comparison]
    """Every other configuration against ``best`` on the quality metric, Holm-corrected."""
    contenders: list[str]

    @property
    def quality(self) -> Metric:
        return metric(self.options.metric)

    def mean(self, label: str, key: str) -> float | None:
        s = self.summaries[label].get(key)
        return s.mean if s is not None and s.n else None

    def comparison(self, label: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.candidate == label), None)


@dataclass(frozen=True)
class Recommendation:
    priority: str
    title: str
    choice: str | None
    """The recommended configuration's label; None when the rule has nothing to choose from."""
    numbers: str
    evidence: str
    rule: str


@dataclass(frozen=True)
class Priority:
    rule: str
    decide: Callable[[Analysis], Recommendation]


PRIORITIES: Registry[Priority] = Registry("priority")


def analyse(configs: list[Configuration], options: DecisionOptions) -> Analysis:
    """Summaries of every metric, the tests against the best, and the contenders, for one group."""
    keys = sorted({k for c in configs for r in c.runs for k in r.metrics})
    summaries = {
        c.label: {k: summarize(c.values(k).values(), options.confidence, options.interval) for k in keys}
        for c in configs
    }
    quality = metric(options.metric)
    values = {c.label: c.values(options.metric) for c in configs if c.values(options.metric)}
    if not values:
        recorded = ", ".join(k for k in keys if not k.startswith("initial_")) or "none"
        raise OnemlError(f"--metric: no finished run recorded {options.metric!r}; recorded: {recorded}")
    best, comparisons = against_best(options.metric, quality.higher_is_better, values, options.confidence)
    a = Analysis(configs[0].group, {c.label: c for c in configs}, options, summaries, best, comparisons, [])
    a.contenders = [best] + [c.candidate for c in comparisons if _contends(a, c)]
    return a


def analyse_study(study: StudyResults, options: DecisionOptions) -> list[Analysis]:
    groups: dict[tuple[str, str, str], list[Configuration]] = {}
    for config in study.configs:
        groups.setdefault(config.group, []).append(config)
    return [analyse(configs, options) for configs in groups.values()]


def _contends(a: Analysis, c: Comparison) -> bool:
    if c.tested:
        return not c.distinguishable(a.options.alpha)
    return _within(a, a.mean(c.candidate, a.options.metric))


def _within(a: Analysis, value: float | None) -> bool:
    """Within the relative tolerance of the best mean quality (on the side that is worse)."""
    best = a.mean(a.best, a.options.metric)
    if value is None or best is None:
        return False
    slack = a.options.tolerance * abs(best)
    return value >= best - slack if a.quality.higher_is_better else value <= best + slack


def complexity(method: str) -> int:
    return METHOD_COMPLEXITY.get(method, (UNKNOWN_COMPLEXITY, ""))[0]


def recommend(a: Analysis, priority: str) -> Recommendation:
    return PRIORITIES.get(priority).decide(a)


def decision_table(a: Analysis) -> list[Recommendation]:
    return [entry.value.decide(a) for entry in PRIORITIES.entries()]


def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def _p_is(name: str, p: float) -> str:
    """``p=0.031`` or ``p<0.0001``."""
    text = format_p(p)
    return f"{name}{text}" if text.startswith("<") else f"{name}={text}"


def signed(x: float, m: Metric) -> str:
    return format(x, "+" + m.fmt) if math.isfinite(x) else "n/a"


def evidence(c: Comparison | None, alpha: float, m: Metric, confidence: float = 0.95) -> str:
    """One sentence on a comparison: the difference, its interval, the tests, the verdict."""
    if c is None:
        return "only one configuration: nothing to compare"
    if not c.tested:
        return f"not tested ({c.note})"
    diff = f"{c.candidate} − {c.reference} = {signed(c.diff, m)}"
    if math.isfinite(c.ci_low):
        diff += f" ({confidence:.0%} CI {signed(c.ci_low, m)} to {signed(c.ci_high, m)})"
    tests = f"{c.test} {_p_is('p', c.p)}, {_p_is('Holm p', c.p_holm)}"
    if math.isfinite(c.wilcoxon_p):
        tests += f", {_p_is('Wilcoxon p', c.wilcoxon_p)}"
    tests += f", d={c.cohen_d:.2f}, n={c.n}" + (f"; {c.note}" if c.note else "")
    verdict = "distinguishable" if c.distinguishable(alpha) else "not distinguishable"
    return f"{verdict} on {m.label}: {diff}; {tests}"


def _ranked(a: Analysis, key: str, labels: list[str]) -> list[str]:
    """``labels`` that recorded ``key``, best mean first (ties: simpler method)."""
    m = metric(key)
    sign = -1 if m.higher_is_better else 1
    have = [label for label in labels if a.mean(label, key) is not None]
    return sorted(have, key=lambda label: (sign * a.mean(label, key), complexity(a.configs[label].method)))


def _versus(a: Analysis, key: str, winner: str, runner_up: str | None) -> str:
    """The runner-up against the winner on ``key``: a single test, so Holm leaves its p-value as it is."""
    if runner_up is None:
        return "only one configuration recorded it: nothing to compare"
    mine, theirs = a.configs[winner].values(key), a.configs[runner_up].values(key)
    c = compare(key, runner_up, theirs, winner, mine, a.options.confidence)
    return "vs runner-up: " + evidence(c, a.options.alpha, metric(key), a.options.confidence)


def _show(a: Analysis, label: str, key: str) -> str:
    s = a.summaries[label].get(key)
    m = metric(key)
    if s is None or not s.n:
        return f"{m.label} -"
    spread = f" ± {m.show(s.std)}" if s.n > 1 else " (n=1)"
    return f"{m.label} {m.show(s.mean)}{spread}"


def _none(name: str, why: str) -> Recommendation:
    entry = PRIORITIES.entry(name)
    return Recommendation(name, entry.description, None, "-", why, entry.value.rule)


def _made(name: str, choice: str, numbers: str, evidence_text: str) -> Recommendation:
    entry = PRIORITIES.entry(name)
    return Recommendation(name, entry.description, choice, numbers, evidence_text, entry.value.rule)


def _performance(a: Analysis) -> Recommendation:
    runner_up = a.comparisons[0] if a.comparisons else None
    text = "vs runner-up: " + evidence(runner_up, a.options.alpha, a.quality, a.options.confidence)
    return _made("performance", a.best, _show(a, a.best, a.options.metric), text)


def _stability(a: Analysis) -> Recommendation:
    key = a.options.metric
    pool = [label for label in a.contenders if a.summaries[label][key].n >= 2]
    if not pool:
        return _none("stability", "no contender has two or more seeds: spread across seeds is unknown")
    pool.sort(key=lambda label: (_nan_last(a.summaries[label][key].cv), a.summaries[label][key].std))
    winner = pool[0]
    s = a.summaries[winner][key]
    numbers = f"CV {s.cv:.2%}, std {a.quality.show(s.std)} over {s.n} seeds"
    text = _quality_status(a, winner)
    if len(pool) > 1:
        other = a.summaries[pool[1]][key]
        p = brown_forsythe(list(a.configs[winner].values(key).values()), list(a.configs[pool[1]].values(key).values()))
        text += (
            f"; runner-up {pool[1]} CV {other.cv:.2%} (Brown-Forsythe p={format_p(p)}, spread compared descriptively)"
        )
    return _made("stability", winner, numbers, text)


def _nan_last(x: float) -> float:
    return math.inf if not math.isfinite(x) else x


def _quality_status(a: Analysis, label: str) -> str:
    if label == a.best:
        single = a.summaries[label][a.options.metric].n == 1
        return f"best mean {a.quality.label}" + (" (one run: no spread, no test)" if single else "")
    return f"vs best: {evidence(a.comparison(label), a.options.alpha, a.quality, a.options.confidence)}"


def _simplicity(a: Analysis) -> Recommendation:
    def order(label: str) -> tuple[int, float]:
        return (complexity(a.configs[label].method), a.mean(label, "trainable_params") or math.inf)

    winner = min(a.contenders, key=order)
    method = a.configs[winner].method
    rank, why = METHOD_COMPLEXITY.get(method, (UNKNOWN_COMPLEXITY, "not in the complexity table: ranked last"))
    numbers = f"complexity {rank}/{UNKNOWN_COMPLEXITY - 1} ({why}); {_show(a, winner, a.options.metric)}"
    return _made("simplicity", winner, numbers, _quality_status(a, winner))


def _convergence_metric(a: Analysis) -> tuple[str, list[str]]:
    """steps_to_threshold over configurations that reached it in every seed, else the train-loss area."""
    full = [lbl for lbl, c in a.configs.items() if len(c.values("steps_to_threshold")) == len(c.runs)]
    if full:
        return "steps_to_threshold", full
    return "train_loss_auc", list(a.configs)


def _convergence(a: Analysis) -> Recommendation:
    key, pool = _convergence_metric(a)
    ranked = _ranked(a, key, pool)
    if not ranked:
        return _none("convergence", "no run recorded steps_to_threshold or a train-loss history")
    winner = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    missing = len(a.configs) - len(pool)
    note = f"; {missing} configuration(s) did not reach the threshold in every seed" if missing else ""
    if winner not in a.contenders:  # fast but worse: say so rather than let speed pass for quality
        note += f"; note: significantly worse than the best on {a.quality.label}"
    return _made("convergence", winner, _show(a, winner, key), _versus(a, key, winner, runner_up) + note)


def _memory(a: Analysis) -> Recommendation:
    pool = [label for label in a.configs if _within(a, a.mean(label, a.options.metric))]
    ranked = _ranked(a, MEMORY, pool)
    if not ranked:
        return _none("memory", "no run recorded peak memory")
    winner = ranked[0]
    delta = (a.mean(winner, MEMORY) or math.nan) - (a.mean(a.best, MEMORY) or math.nan)
    relative = "the best-quality configuration itself" if winner == a.best else f"{delta:+,.0f} MiB vs the best"
    numbers = f"{_show(a, winner, MEMORY)} ({relative}); {_show(a, winner, a.options.metric)}"
    tol = f"within {a.options.tolerance:.0%} of the best mean {a.quality.label}"
    return _made("memory", winner, numbers, f"{tol}; {_quality_status(a, winner)}")


def _preference(a: Analysis) -> Recommendation:
    ranked = _ranked(a, PREFERENCE, list(a.configs))
    if not ranked:
        return _none("preference", "no preference runs (no run recorded eval_preference_accuracy)")
    runner_up = ranked[1] if len(ranked) > 1 else None
    return _made("preference", ranked[0], _show(a, ranked[0], PREFERENCE), _versus(a, PREFERENCE, ranked[0], runner_up))


# criterion -> (its raw value for a configuration, higher is better; None: the quality metric's direction)
CRITERIA: dict[str, tuple[Callable[[Analysis, str], float | None], bool | None]] = {
    "quality": (lambda a, label: a.mean(label, a.options.metric), None),  # direction from the metric
    "stability": (lambda a, label: _finite(a.summaries[label][a.options.metric].cv), False),
    "simplicity": (lambda a, label: float(complexity(a.configs[label].method)), False),
    "convergence": (lambda a, label: a.mean(label, _convergence_metric(a)[0]), False),
    "memory": (lambda a, label: a.mean(label, MEMORY), False),
    "speed": (lambda a, label: a.mean(label, "tokens_per_second"), True),
    "preference": (lambda a, label: a.mean(label, PREFERENCE), True),
}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def scores(a: Analysis) -> dict[str, dict[str, float]]:
    """Per contender, each criterion scaled to [0, 1] over the contenders (1 = best), plus the weighted 'score'."""
    out: dict[str, dict[str, float]] = {label: {} for label in a.contenders}
    used: dict[str, float] = {}
    for name, (value_of, higher) in CRITERIA.items():
        weight = float(a.options.weights.get(name, 0.0))
        higher = a.quality.higher_is_better if higher is None else higher
        raw = {label: value_of(a, label) for label in a.contenders}
        known = [v for v in raw.values() if v is not None]
        if weight <= 0 or not known:
            continue
        used[name] = weight
        best, worst = (max(known), min(known)) if higher else (min(known), max(known))
        for label, v in raw.items():
            out[label][name] = 0.0 if v is None else 1.0 if best == worst else abs(v - worst) / abs(best - worst)
    total = sum(used.values())
    for parts in out.values():
        parts["score"] = sum(used[k] * parts[k] for k in used) / total if total else 0.0
    return out


def _start(a: Analysis) -> Recommendation:
    table = scores(a)
    winner = max(a.contenders, key=lambda label: (table[label]["score"], -complexity(a.configs[label].method)))
    parts = ", ".join(f"{k} {v:.2f}" for k, v in table[winner].items() if k != "score")
    numbers = f"score {table[winner]['score']:.2f} ({parts}); {_show(a, winner, a.options.metric)}"
    weights = ", ".join(f"{k}={v:g}" for k, v in a.options.weights.items())
    text = f"{_quality_status(a, winner)}; highest weighted score among {len(a.contenders)} contender(s) ({weights})"
    return _made("start", winner, numbers, text)


def parse_weights(text: str | None) -> dict[str, float]:
    """``quality=2,memory=1`` or a YAML file of the same mapping; unnamed criteria keep their default."""
    weights = dict(DEFAULT_WEIGHTS)
    if not text:
        return weights
    if text.endswith((".yaml", ".yml")):
        raw = _weights_file(Path(text))
    else:
        raw = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise OnemlError(f"--weights {item!r}: expected criterion=number, e.g. quality=2")
            raw[key.strip()] = value.strip()
    for key, value in raw.items():
        if key not in DEFAULT_WEIGHTS:
            raise OnemlError(f"--weights: unknown criterion {key!r}; one of {', '.join(DEFAULT_WEIGHTS)}")
        try:
            weights[key] = float(value)
        except (TypeError, ValueError):
            raise OnemlError(f"--weights {key}: must be a number >= 0, got {value!r}") from None
        if not weights[key] >= 0:
            raise OnemlError(f"--weights {key}: must be a number >= 0, got {value!r}")
    return weights


def _weights_file(path: Path) -> dict[str, object]:
    import yaml

    if not path.is_file():
        raise OnemlError(f"--weights: file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise OnemlError(f"--weights {path}: must be a mapping of criterion: weight")
    return {str(k): v for k, v in data.items()}


_RULES = {
    "performance": (
        "Maximum performance",
        "Best mean quality metric. The runner-up is tested against it (paired t over shared seeds, Holm-corrected "
        "across all comparisons with the best); when not distinguishable the row says so and the other rows decide.",
        _performance,
    ),
    "stability": (
        "Production stability",
        "Among contenders (the best and those not distinguishable from it) with two or more seeds: the lowest "
        "coefficient of variation of the quality metric across seeds (ties: lower std).",
        _stability,
    ),
    "simplicity": (
        "Minimal engineering",
        "Among contenders: the lowest rank in the method-complexity table (ties: fewer trainable parameters).",
        _simplicity,
    ),
    "convergence": (
        "Fast convergence",
        "Fewest mean steps to the training-loss threshold among configurations that reached it in every seed; "
        "without thresholds, the lowest mean training loss over the run. Tested against the runner-up.",
        _convergence,
    ),
    "memory": (
        "Memory-constrained",
        "Lowest mean peak memory among configurations whose mean quality lies within the tolerance of the best mean.",
        _memory,
    ),
    "preference": (
        "Preference alignment",
        "Best mean preference accuracy, tested against the runner-up; 'no preference runs' when none recorded it.",
        _preference,
    ),
    "start": (
        "Starting point",
        "Highest weighted score among contenders: each criterion scaled to [0, 1] over the contenders (1 = best), "
        "weighted and averaged; ties go to the simpler method.",
        _start,
    ),
}
for _name, (_title, _rule, _decide) in _RULES.items():
    PRIORITIES.register(_name, Priority(_rule, _decide), _title)
