"""The decision guide: one row per priority, each with a verdict (decided, inconclusive or none), its numbers
and its test.

Configurations are compared within one *group* (same model, objective and dataset: elsewhere a loss means
something else). The quality metric is ``eval_loss`` unless the user picks another (token accuracy, a
downstream benchmark ``bench/<name>``); alpha defaults to 0.05 and the equivalence margin to 1% of the best
mean (`--margin`, or `margin:` in the study YAML).

Every configuration gets one verdict against the best on the quality metric (`verdicts.py`: better, worse,
equivalent within the margin, or inconclusive; selection-aware, every run used). That is the one meaning of
"as good" every row uses: the *contenders* are the best and the configurations equivalent to it; the
*undecided* are those the evidence cannot place. A row whose answer could change with an undecided
configuration is itself inconclusive: it names the candidates it cannot separate and about how many seeds
per configuration would decide it, and what that would cost at the recorded time per run. It shows no
winner. The rows:

- performance: the best mean. Decided when every other configuration is worse or equivalent.
- stability: among contenders, the lowest failure rate (failed, diverged and NaN runs count; Clopper-Pearson
  interval), then the smallest spread across seeds (chi-square interval of the sd). Decided when the winner's
  failure rate is significantly lower (Boschloo's exact test) or its spread significantly smaller (permutation
  test of the log sd ratio, from 5 seeds per configuration) than every other contender's.
- simplicity: the contender whose method ranks simplest (each method declares its rank; runs record it; ties:
  fewer trainable parameters).
- convergence: steps to the training-loss threshold as time to event (censored at the run's end when not
  reached): the lowest Kaplan-Meier median, tested by log-rank; without thresholds, the mean per-step training
  loss on a common step grid, judged like quality. Its quality verdict is stated beside it.
- memory: the contender with the lowest mean peak memory (CUDA peak when recorded, else resident set).
- preference: the best mean length-controlled win rate by a judge (`oneml eval -b winrate`, `bench/winrate/<opponent>/
  lc_win_rate`; the opponent most configurations were judged against, base first) when any run recorded one, else the
  best mean preference accuracy (`test_preference_accuracy` when the runs had a test split, else
  `eval_preference_accuracy`); judged like quality.
- start: the contender with the highest weighted score; each criterion is the configuration's value as a
  ratio of the best contender's (1 = best), so a gap of 0.0001 in loss is a gap of 0.0001, not of 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from oneml.analysis import wording
from oneml.analysis.metrics import Metric, defines_loss, is_loss, metric, test_key
from oneml.analysis.results import Configuration, StudyResults
from oneml.analysis.stats import Summary, summarize
from oneml.analysis.verdicts import DEFAULT_MARGIN, Comparison, Margin, Ranking, parse_margin, rank
from oneml.errors import OnemlError
from oneml.registry import Registry
from oneml.tracking import tags as tag

# Runs record their method's simplicity rank (tags.COMPLEXITY, declared in each method's own file). This frozen
# copy ranks runs recorded before they did; it is never extended: a new method declares its rank in its file.
LEGACY_COMPLEXITY: dict[str, tuple[float, str]] = {
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
UNRANKED = (math.inf, "not ranked: its runs do not say (ranked last)")


def complexity_of(c: Configuration) -> tuple[float, str]:
    """(rank, why) of a configuration's method: from its runs' tags, else the frozen legacy table, else last."""
    for run in c.runs + c.failed:
        if tag.COMPLEXITY in run.tags:
            try:
                return float(run.tags[tag.COMPLEXITY]), run.tags.get(tag.COMPLEXITY_WHY, "")
            except ValueError:
                break
    return LEGACY_COMPLEXITY.get(c.method, UNRANKED)


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
JUDGED = ("winrate", "mt-bench")
"""Benchmarks recording a judge's length-controlled win rate, bench/<name>/<opponent>/lc_win_rate: the preference
row reads them first (answers judged as a user would meet them), in this order."""
MEMORY = "peak_memory_mib"
TIME_KEYS = ("train_wall_seconds", "train_seconds")
EVAL_TIME_KEYS = ("initial_eval_seconds", "eval_seconds", "test_seconds")
"""What a run spends scoring outside its training loop (before it, after it, on the test rows): part of what one
more seed costs."""
SCORE_TIE = 0.01
"""Starting-point scores closer than this are a tie (the simpler method wins): scores are ratios, and a
hundredth of one is below what a study of a few seeds can tell apart."""
MEMORY_TIE = 0.01
"""Peak memories within 1% of each other are a tie (the simpler method wins): allocator noise, not a method."""
MARGIN_TAG = tag.MARGIN
DEFAULT_ALPHA = 0.05
DEFAULT_METRIC = "eval_loss"
LOSS_FREE = ("eval_preference_accuracy", "eval_label_accuracy", "eval_token_accuracy")
"""What a group is compared on when its configurations differ in what their loss is (an objective's beta, lambda or
loss type scales or reshapes it): the first of these the runs recorded, on the test rows where they exist. Each is
the same measurement whatever those values (DPO's reward accuracy is the sign of beta x margin, beta > 0)."""


@dataclass(frozen=True)
class DecisionOptions:
    metric: str | None = None
    """The quality metric every rule starts from; None = eval_loss, or test_loss where runs recorded a test split
    (selection reads the validation rows; the guide compares on rows nothing selected on)."""
    alpha: float | None = None
    """Chance of any wrong verdict in a group (shared among all pairs of configurations). None (not set): 0.05,
    or for a sequential study the share of alpha its last look spends (`analysis/sequential.py`)."""
    confidence: float = 0.95
    """Of the per-configuration summaries (the comparisons' intervals follow alpha)."""
    margin: Margin | str | float | None = None
    """Equivalence margin: ``1%`` (of the best mean) or metric units; None = the study's, else 1%."""
    interval: str = "t"
    """Confidence intervals of the per-configuration summaries: 't' or 'bootstrap'."""
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))


@dataclass
class Analysis:
    """One comparable group of configurations, summarised and judged."""

    group: tuple[str, str, str]
    configs: dict[str, Configuration]
    options: DecisionOptions
    margin: Margin
    summaries: dict[str, dict[str, Summary]]
    ranking: Ranking
    """Every configuration with a finite quality result against the best (`verdicts.rank`)."""

    @property
    def quality(self) -> Metric:
        return metric(self.options.metric)  # type: ignore[arg-type]  # resolved by analyse()

    @property
    def best(self) -> str:
        return self.ranking.best

    @property
    def comparisons(self) -> list[Comparison]:
        return self.ranking.comparisons

    @property
    def contenders(self) -> list[str]:
        return self.ranking.contenders

    @property
    def undecided(self) -> list[str]:
        return self.ranking.undecided

    def mean(self, label: str, key: str) -> float | None:
        s = self.summaries[label].get(key)
        return s.mean if s is not None and s.n else None

    def comparison(self, label: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.candidate == label), None)

    def verdict(self, label: str) -> str:
        """best, better, worse, equivalent, inconclusive, or failed (no finished run with a finite result)."""
        if label == self.best:
            return "best"
        c = self.comparison(label)
        return c.verdict if c else "failed"

    def n(self, label: str) -> int:
        return self.summaries[label][self.options.metric].n if self.options.metric in self.summaries[label] else 0

    def seconds_per_run(self, label: str) -> float | None:
        """What one more seed of ``label`` costs: its training wall time plus its evaluations (mean over runs)."""
        train = next((v for k in TIME_KEYS if (v := self.mean(label, k)) is not None), None)
        if train is None:
            return None
        return train + sum(v for k in EVAL_TIME_KEYS if (v := self.mean(label, k)) is not None)

    def failures(self, label: str) -> tuple[int, int]:
        """(failed, total): FAILED runs plus finished runs without a finite quality result, over all runs."""
        c = self.configs[label]
        bad = sum(not math.isfinite(r.metrics.get(self.options.metric, math.nan)) for r in c.runs)
        return bad + len(c.failed), len(c.runs) + len(c.failed)


@dataclass(frozen=True)
class Recommendation:
    priority: str
    title: str
    choice: str | None
    """The recommended configuration when decided; the leading candidate when inconclusive; None for none."""
    numbers: str
    evidence: str
    rule: str
    verdict: str = "decided"
    """decided | inconclusive | none (the rule had nothing to choose from)."""
    n: int = 0
    """Runs (seeds) behind the choice."""
    candidates: tuple[str, ...] = ()
    """When inconclusive: the configurations the evidence cannot separate."""
    seeds_needed: int | None = None
    """When inconclusive: about how many seeds per configuration would decide it (80% power)."""
    cost_seconds: float | None = None
    """What those extra seeds cost at the recorded time per run."""

    @property
    def decided(self) -> bool:
        return self.verdict == "decided"

    @property
    def winner(self) -> str | None:
        """The configuration to show as the answer: only when decided."""
        return self.choice if self.decided else None


@dataclass(frozen=True)
class Priority:
    rule: str
    decide: Callable[[Analysis], Recommendation]


PRIORITIES: Registry[Priority] = Registry("priority")


def _finite_values(c: Configuration, key: str) -> dict[str, float]:
    return {s: v for s, v in c.values(key).items() if math.isfinite(v)}


def quality_metric(options: DecisionOptions, configs: list[Configuration]) -> str:
    """The metric asked for, else the default eval_loss, or its test twin (test_loss) when runs recorded one."""
    if options.metric is not None:
        return options.metric
    recorded = {k for c in configs for r in c.runs for k in r.metrics}
    if loss_defined_by(configs):
        free = [k for key in LOSS_FREE for k in (test_key(key), key) if k in recorded]
        if free:
            return free[0]
    twin = test_key(DEFAULT_METRIC)
    return twin if twin in recorded else DEFAULT_METRIC


def loss_defined_by(configs: list[Configuration]) -> list[str]:
    """The objective settings (``objective.beta``, ``objective.lambda``, ...) that differ between the group's
    configurations. Each defines the loss (a weight on one of its terms, a temperature, a loss type), so two
    configurations that differ in one do not measure the same thing with their loss, on any rows."""
    seen: dict[str, set[str]] = {}
    for c in configs:
        for r in c.runs:
            for key, value in r.params.items():
                if defines_loss(key):
                    seen.setdefault(key, set()).add(value)
    return sorted(key for key, values in seen.items() if len(values) > 1)


def metric_note(a: Analysis) -> str | None:
    """Why a group is not compared on its loss, when it is not; a warning when asked to compare on it anyway."""
    keys = loss_defined_by(list(a.configs.values()))
    if not keys:
        return None
    names = ", ".join(keys) + (" (which define the loss)" if len(keys) > 1 else " (which defines the loss)")
    if is_loss(str(a.options.metric)):
        return (
            f"{a.group[1]}: the configurations differ in {names}, yet the guide compares "
            f"their {a.quality.label} (asked for with --metric, or no accuracy was recorded): those numbers do not "
            "measure the same thing"
        )
    return (
        f"{a.group[1]}: compared on {a.quality.label}, not on the loss: the configurations differ in {names}; "
        "the same model scores a different loss under each, so their losses, and the training-loss convergence "
        "row, do not compare"
    )


def analyse(configs: list[Configuration], options: DecisionOptions, margin: Margin | None = None) -> Analysis:
    """Summaries of every metric, and every configuration's verdict against the best, for one group."""
    options = replace(options, metric=quality_metric(options, configs))
    keys = sorted({k for c in configs for r in c.runs for k in r.metrics})
    summaries = {
        c.label: {k: summarize(_finite_values(c, k).values(), options.confidence, options.interval) for k in keys}
        for c in configs
    }
    quality = metric(options.metric)
    values = {c.label: _finite_values(c, options.metric) for c in configs}
    if not any(values.values()):
        recorded = ", ".join(k for k in keys if not k.startswith("initial_")) or "none"
        raise OnemlError(f"--metric: no finished run recorded {options.metric!r}; recorded: {recorded}")
    margin = margin or resolve_margin(options, {})
    if options.alpha is None:
        options = replace(options, alpha=DEFAULT_ALPHA)
    ranking = rank(options.metric, quality.higher_is_better, values, margin, options.alpha)
    return Analysis(configs[0].group, {c.label: c for c in configs}, options, margin, summaries, ranking)


def resolve_margin(options: DecisionOptions, parent_tags: Mapping[str, str]) -> Margin:
    """--margin, else the margin the study YAML recorded on its parent run, else 1% of the best mean."""
    if options.margin is not None:
        return parse_margin(options.margin, "--margin")
    return parse_margin(parent_tags.get(MARGIN_TAG, DEFAULT_MARGIN), "margin")


def analyse_study(study: StudyResults, options: DecisionOptions) -> list[Analysis]:
    """Every comparable group of the study, judged. Alpha not set: a sequential study's looks share it, so its
    verdicts are judged at the share of its last look (what the report states), any other study at 0.05."""
    from oneml.analysis.sequential import look_alpha

    margin = resolve_margin(options, study.parent_tags)
    if options.alpha is None:
        look = look_alpha(study.parent_tags, DEFAULT_ALPHA)
        options = replace(options, alpha=look[0] if look else DEFAULT_ALPHA)
    groups: dict[tuple[str, str, str], list[Configuration]] = {}
    for config in study.configs:
        groups.setdefault(config.group, []).append(config)
    return [analyse(configs, options, margin) for configs in groups.values() if _has_quality(configs, options)]


def _has_quality(configs: list[Configuration], options: DecisionOptions) -> bool:
    """A group of configurations that only failed has nothing to rank (the excluded-runs table lists them)."""
    return any(c.runs for c in configs)


def complexity(c: Configuration) -> float:
    return complexity_of(c)[0]


def recommend(a: Analysis, priority: str) -> Recommendation:
    return PRIORITIES.get(priority).decide(a)


def decision_table(a: Analysis) -> list[Recommendation]:
    return [entry.value.decide(a) for entry in PRIORITIES.entries()]


def replicated(analyses: list[Analysis]) -> bool:
    """Whether any comparison in these groups could be tested (some configurations ran two or more seeds)."""
    return any(c.tested for a in analyses for c in a.comparisons)


def show(a: Analysis, label: str, key: str) -> str:
    s = a.summaries[label].get(key)
    m = metric(key)
    if s is None or not s.n:
        return f"{m.label} -"
    spread = f" ± {m.show(s.std)}" if s.n > 1 else " (n=1)"
    return f"{m.label} {m.show(s.mean)}{spread}"


def none(name: str, why: str) -> Recommendation:
    entry = PRIORITIES.entry(name)
    return Recommendation(name, entry.description, None, "-", why, entry.value.rule, "none")


def made(
    a: Analysis,
    name: str,
    choice: str,
    numbers: str,
    text: str,
    blockers: list[Comparison],
    extra: tuple[tuple[str, ...], int | None] | None = None,
) -> Recommendation:
    """A decided row, or an inconclusive one when ``blockers`` (undecided comparisons) or ``extra`` (labels the
    row's own test could not separate from ``choice``, with the seeds that would) could change it."""
    entry = PRIORITIES.entry(name)
    n = a.n(choice) or len(a.configs[choice].runs)
    labels, extra_seeds = extra or ((), None)
    if not blockers and not labels:
        return Recommendation(name, entry.description, choice, numbers, text, entry.value.rule, "decided", n)
    candidates = tuple(dict.fromkeys([choice, *(c.candidate for c in blockers), *(c.reference for c in blockers)]))
    candidates = tuple(dict.fromkeys([*candidates, *labels]))
    known = [c.seeds_needed for c in blockers] + ([extra_seeds] if labels else [])
    seeds = None if any(s is None for s in known) else max(known)  # type: ignore[type-var]
    cost = _cost(a, candidates, seeds)
    unknown = _why_no_number(blockers) if any(c.seeds_needed is None for c in blockers) else NO_SEEDS_EXTRA
    more = wording.more_seeds(seeds, cost, unknown)
    head = f"no winner at n={_n_span(a, candidates)}: the evidence cannot separate {', '.join(candidates)}; {more}"
    return Recommendation(
        name, entry.description, choice, numbers, f"{head}. {text}", entry.value.rule, "inconclusive", n,
        candidates, seeds, cost,
    )  # fmt: skip


NO_SEEDS_EXTRA = "no number of seeds up to 1000 per configuration would separate them at the observed spread"


def _n_span(a: Analysis, labels) -> str:
    ns = sorted({a.n(label) for label in labels})
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"


def _cost(a: Analysis, labels, seeds: int | None) -> float | None:
    """The compute to bring every one of ``labels`` to ``seeds`` runs, at its recorded time per run."""
    if seeds is None:
        return None
    cost = 0.0
    for label in labels:
        per_run = a.seconds_per_run(label)
        if per_run is None:
            return None
        cost += max(0, seeds - len(a.configs[label].runs) - len(a.configs[label].failed)) * per_run
    return cost


def _why_no_number(blockers: list[Comparison]) -> str:
    untested = [c for c in blockers if not c.tested and "identical" not in c.note]
    if any("identical" in c.note for c in blockers):
        return (
            "results do not vary across seeds (seed not applied, or a metric too coarse to differ?), so no number "
            "of seeds can be given"
        )
    if untested and all(c.seeds_needed is None for c in untested):
        return "the spread across seeds is unknown: run at least 3 seeds per configuration to measure it"
    return (
        f"no number of seeds up to 1000 per configuration would: the difference is about the size of the margin "
        f"(±{untested[0].margin if untested else blockers[0].margin:.4g}); decide on other grounds or set --margin"
    )


def quality_status(a: Analysis, label: str) -> str:
    """Where ``label`` stands on the quality metric, in words."""
    if label == a.best:
        others = len(a.comparisons)
        if not others:
            return f"the only configuration with a {a.quality.label} result"
        return f"best mean {a.quality.label}" + (" (one run: nothing can be tested)" if a.n(label) < 2 else "")
    c = a.comparison(label)
    return "no finished run" if c is None else f"vs best ({a.best}) " + wording.comparison(c, a.quality)


def blocking(a: Analysis) -> list[Comparison]:
    """The undecided comparisons: any of them could change an answer that rests on "as good as the best"."""
    return [c for c in a.comparisons if c.verdict == "inconclusive"]


def _performance(a: Analysis) -> Recommendation:
    others = [wording.comparison(c, a.quality) for c in a.comparisons]
    text = "vs best: " + "; ".join(others) if others else "only one configuration: nothing to compare"
    text += f" (margin ±{a.ranking.margin:.4g} {a.quality.label}, {a.margin} )".replace(" )", ")")
    return made(a, "performance", a.best, show(a, a.best, a.options.metric), text, blocking(a))


def _simplicity(a: Analysis) -> Recommendation:
    def order(label: str) -> tuple[int, float]:
        return (complexity(a.configs[label]), a.mean(label, "trainable_params") or math.inf)

    winner = min(a.contenders, key=order)
    rank_, why = complexity_of(a.configs[winner])
    numbers = f"complexity rank {rank_:g} (1 = simplest: {why}); {show(a, winner, a.options.metric)}"
    return made(a, "simplicity", winner, numbers, quality_status(a, winner), blocking(a))


def _memory(a: Analysis) -> Recommendation:
    pool = [label for label in a.contenders if a.mean(label, MEMORY) is not None]
    if not pool:
        return none("memory", "no contender recorded peak memory")
    low = min(a.mean(label, MEMORY) for label in pool)  # type: ignore[type-var]
    tied = [label for label in pool if a.mean(label, MEMORY) <= low * (1 + MEMORY_TIE)]  # type: ignore[operator]
    winner = min(tied, key=lambda label: (complexity(a.configs[label]), a.mean(label, MEMORY)))
    delta = (a.mean(winner, MEMORY) or math.nan) - (a.mean(a.best, MEMORY) or math.nan)
    relative = "the best-quality configuration itself" if winner == a.best else f"{delta:+,.0f} MiB vs the best"
    numbers = f"{show(a, winner, MEMORY)} ({relative}); {show(a, winner, a.options.metric)}"
    tie = (
        f"; within {MEMORY_TIE:.0%} of {', '.join(t for t in tied if t != winner)}: the simpler one"
        if len(tied) > 1
        else ""
    )
    text = f"lowest peak memory among the {len(a.contenders)} contender(s){tie}; {quality_status(a, winner)}"
    return made(a, "memory", winner, numbers, text, blocking(a))


def _preference(a: Analysis) -> Recommendation:
    from oneml.analysis.rules import preference

    return preference(a)


def _stability(a: Analysis) -> Recommendation:
    from oneml.analysis.rules import stability

    return stability(a)


def _convergence(a: Analysis) -> Recommendation:
    from oneml.analysis.rules import convergence

    return convergence(a)


def _start(a: Analysis) -> Recommendation:
    from oneml.analysis.rules import scores

    pool = a.contenders
    table = scores(a, pool)
    top = max(table[label]["score"] for label in pool)
    tied = [label for label in pool if table[label]["score"] >= top - SCORE_TIE]
    winner = min(tied, key=lambda label: (complexity(a.configs[label]), -table[label]["score"]))
    parts = ", ".join(f"{k} {v:.2f}" for k, v in table[winner].items() if k != "score")
    numbers = f"score {table[winner]['score']:.2f} ({parts}); {show(a, winner, a.options.metric)}"
    weights = ", ".join(f"{k}={v:g}" for k, v in a.options.weights.items())
    text = f"highest weighted score among {len(pool)} contender(s) ({weights}); {quality_status(a, winner)}"
    if len(tied) > 1:
        text += f"; scores within {SCORE_TIE} of {', '.join(t for t in tied if t != winner)}: the simpler one"
    return made(a, "start", winner, numbers, text, blocking(a))


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
        "The best mean quality. Decided when every other configuration is worse or equivalent (within the "
        "margin); otherwise no winner, with the seeds that would decide it.",
        _performance,
    ),
    "stability": (
        "Production stability",
        "Among contenders: the lowest failure rate (failed, diverged and NaN runs count), then the smallest spread "
        "across seeds. Decided when its failure rate (Boschloo exact test) or spread (permutation test of the log sd "
        "ratio, from 5 seeds each) is significantly better than every other contender's.",
        _stability,
    ),
    "simplicity": (
        "Minimal engineering",
        "Among contenders: the lowest rank in the method-complexity table (ties: fewer trainable parameters).",
        _simplicity,
    ),
    "convergence": (
        "Fast convergence",
        "Steps to the training-loss threshold as time to event (censored at the end of a run that never reached "
        "it): the lowest Kaplan-Meier median, tested by log-rank against the others. Without thresholds: the mean "
        "per-step training loss on a common step grid, judged like quality. Its quality verdict is stated.",
        _convergence,
    ),
    "memory": (
        "Memory-constrained",
        "Among contenders: the lowest mean peak memory (within 1% counts as a tie: the simpler method).",
        _memory,
    ),
    "preference": (
        "Preference alignment",
        "The best mean length-controlled win rate by a judge (oneml eval -b winrate; against the opponent most "
        "configurations were judged against, base first) when recorded, else the best mean preference accuracy "
        "(on the test rows when runs have a test split); "
        "judged like quality; 'no preference runs' when neither was recorded.",
        _preference,
    ),
    "start": (
        "Starting point",
        "Among contenders: the highest weighted score; each criterion is the value as a ratio of the best "
        "contender's (1 = best), weighted and averaged; scores within 0.01 tie and go to the simpler method.",
        _start,
    ),
}
for _name, (_title, _rule, _decide) in _RULES.items():
    PRIORITIES.register(_name, Priority(_rule, _decide), _title)
