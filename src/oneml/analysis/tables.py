"""The report's tables as plain data, rendered alike to HTML, Markdown, CSV and the terminal."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from oneml.analysis.decision import (
    PRIORITIES,
    Analysis,
    Recommendation,
    complexity_of,
)
from oneml.analysis.metrics import metric, summary_keys
from oneml.analysis.results import StudyResults
from oneml.analysis.stats import Summary
from oneml.analysis.wording import confidence_of, format_p, interval, signed


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    classes: list[str] = field(default_factory=list)
    """One CSS class per row ('best', 'contender', 'worse', ''), for emphasis in HTML."""
    caption: str = ""


def decision_table(a: Analysis, recommendations: list[Recommendation]) -> Table:
    rows = [[r.title, r.verdict, recommended(r), r.numbers, r.evidence] for r in recommendations]
    classes = ["best" if r.decided else "undecided" if r.verdict == "inconclusive" else "" for r in recommendations]
    columns = ["priority", "verdict", "recommended", "numbers", "evidence"]
    return Table("decision", "Decision guide", columns, rows, classes, guide_caption(a))


def recommended(r: Recommendation) -> str:
    """The answer cell: the winner when decided; the candidates (no winner) when not."""
    if r.decided:
        return r.choice or "—"
    if r.verdict == "inconclusive":
        return "no winner: " + " / ".join(r.candidates)
    return "—"


def guide_caption(a: Analysis) -> str:
    c = a.ranking
    pairs = f"{c.family} pair{'s' if c.family != 1 else ''}"
    return (
        f"Quality metric: {a.quality.label} ({'higher' if a.quality.higher_is_better else 'lower'} is better). "
        f"Equivalence margin ±{c.margin:.4g} ({a.margin}{' of the best mean' if a.margin.relative else ''}). "
        f"Chance of any wrong verdict at most {a.options.alpha:g}, shared among all {pairs} of configurations. "
        f"{len(a.contenders)} of {len(a.configs)} configuration(s) are contenders (the best and those equivalent "
        f"to it), {len(a.undecided)} undecided."
    )


def _cell(s: Summary | None, key: str, spread: bool = False) -> str:
    if s is None or not s.n:
        return "-"
    m = metric(key)
    if s.n == 1:
        return f"{m.show(s.mean)} (n=1)"
    text = f"{m.show(s.mean)} ± {m.show(s.std)}"
    if spread and math.isfinite(s.ci_low):
        text += f" [{m.show(s.ci_low)}, {m.show(s.ci_high)}]"
    return text


def _order(a: Analysis) -> list[str]:
    """Best first, then contenders, then the rest, each by mean quality."""
    sign = -1 if a.quality.higher_is_better else 1
    quality = {label: a.mean(label, a.options.metric) for label in a.configs}
    standing = {"best": 0, "equivalent": 1, "better": 1, "inconclusive": 2, "worse": 3}
    return sorted(
        a.configs,
        key=lambda label: (standing.get(a.verdict(label), 4), quality[label] is None, sign * (quality[label] or 0)),
    )


def _recorded(a: Analysis, cost: bool) -> list[str]:
    available = {k for per in a.summaries.values() for k, s in per.items() if s.n}
    keys = [k for k in summary_keys(available) if metric(k).cost == cost and k != "trainable_params"]
    return [k for k in keys if k != a.options.metric]


def quality_table(a: Analysis) -> Table:
    q = a.options.metric
    keys = _recorded(a, cost=False)
    columns = ["configuration", "method", "verdict", "seeds", "failed", f"{metric(q).label} mean ± std [95% CI]", "CV"]
    columns += [metric(k).label for k in keys]
    rows, classes = [], []
    for label in _order(a):
        per, s = a.summaries[label], a.summaries[label].get(q)
        cv = f"{s.cv:.2%}" if s and s.n > 1 and math.isfinite(s.cv) else "-"
        failed, total = a.failures(label)
        head = [label, a.configs[label].method, a.verdict(label), str(len(a.configs[label].runs)), f"{failed}/{total}"]
        rows.append(head + [_cell(s, q, True), cv])
        rows[-1] += [_cell(per.get(k), k) for k in keys]
        classes.append(_status(a, label))
    caption = (
        "Mean ± sample std (ddof=1) over seeds; brackets: 95% confidence interval of the mean; CV = std / mean. "
        "Verdict: against the best (see the comparisons). Failed: failed, diverged or NaN runs of all runs."
    )
    return Table("configs", "Quality per configuration", columns, rows, classes, caption)


def cost_table(a: Analysis) -> Table:
    keys = _recorded(a, cost=True)
    columns = ["configuration"] + [metric(k).label for k in keys]
    order = _order(a)
    rows = [[label] + [_cell(a.summaries[label].get(k), k) for k in keys] for label in order]
    caption = "Mean ± std over seeds. Mean train loss = area under the training-loss curve / steps (lower = faster)."
    return Table("costs", "Cost per configuration", columns, rows, [_status(a, label) for label in order], caption)


def _status(a: Analysis, label: str) -> str:
    """CSS class of a configuration's row: best, contender (equivalent), undecided, or worse (also failed)."""
    verdict = a.verdict(label)
    return {"best": "best", "equivalent": "contender", "inconclusive": "undecided"}.get(verdict, "worse")


def comparison_table(a: Analysis) -> Table:
    m = a.quality
    columns = ["configuration", "vs best", "verdict", "test", "runs", "difference [CI]", "CI level", "relative"]
    columns += ["p", "adjusted p", "effect size", "seeds needed", "note"]
    rows, classes = [], []
    best_mean = a.mean(a.best, a.options.metric)
    for c in a.comparisons:
        diff = f"{signed(c.diff, m)} {interval(c.ci_low, c.ci_high, m)}".strip() if math.isfinite(c.diff) else "-"
        rel = f"{c.diff / abs(best_mean):+.2%}" if best_mean and math.isfinite(c.diff) else "-"
        effect = f"{c.d.effect_kind} {c.d.effect:.2f}" if c.tested and math.isfinite(c.d.effect) else "-"
        runs = f"{c.d.n_candidate} vs {c.d.n_reference}" + (f" ({c.n} pairs)" if c.test == "paired t" else "")
        level = confidence_of(c) if c.tested else "-"
        seeds = str(c.seeds_needed) if c.seeds_needed is not None else "-"
        rows.append([c.candidate, c.reference, c.verdict, c.test, runs, diff, level, rel, format_p(c.p),
                     format_p(c.p_adjusted), effect, seeds, c.note])  # fmt: skip
        classes.append(_status(a, c.candidate))
    caption = (
        f"Every configuration against the best on {m.label} (difference = configuration − best; "
        f"{'higher' if m.higher_is_better else 'lower'} is better; relative = difference / best mean). "
        f"Equivalent: the {_eq_level(a)} interval lies inside ±{a.ranking.margin:.4g}; better/worse: the interval "
        "shown excludes 0; inconclusive: neither. The level is shared among all pairs of configurations, because "
        "the best is chosen from the same data (adjusted p = p × pairs). Paired t over the seeds both ran when "
        "they ran the same seeds, Welch's t on every run otherwise. Effect sizes: d_z = mean paired difference / "
        "sd of the paired differences; d_s = mean difference / pooled sd. Seeds needed: per configuration, for "
        "an 80% chance of a verdict at the observed difference and spread."
    )
    return Table("comparisons", "Comparisons with the best", columns, rows, classes, caption)


def _eq_level(a: Analysis) -> str:
    if not a.comparisons:
        return "(1 − 2·alpha/pairs)"
    level = 1 - 2 * a.options.alpha / a.ranking.family
    return f"{level:.1%}".replace(".0%", "%")


def rules_table() -> Table:
    rows = [[e.name, e.description, e.value.rule] for e in PRIORITIES.entries()]
    return Table("rules", "How each recommendation is made", ["priority", "title", "rule"], rows)


def complexity_table(configs) -> Table:
    """The simplicity ranking of the methods in these configurations, as their runs recorded it."""
    ranked: dict[str, tuple[float, str]] = {}
    for c in configs:
        ranked.setdefault(c.method, complexity_of(c))
    rows = [[m, f"{r:g}", why] for m, (r, why) in sorted(ranked.items(), key=lambda kv: (kv[1][0], kv[0]))]
    return Table("complexity", "Method complexity ranking (1 = simplest)", ["method", "rank", "why"], rows, [])


def excluded_table(study: StudyResults) -> Table:
    rows = [[r.name, r.method, r.seed, r.state, r.reason] for r in study.excluded]
    caption = "Failed, killed, unfinished and pruned runs: counted here, kept out of every statistic."
    return Table(
        "excluded", "Runs not in the statistics", ["run", "method", "seed", "status", "reason"], rows, [], caption
    )


def group_title(a: Analysis) -> str:
    model, objective, dataset = a.group
    return f"{model} · {objective} · {dataset}"


def cross_study_table(studies: list[StudyResults], analyses: list[list[Analysis]]) -> Table:
    """The same configuration (method and grid values, model aside) side by side across studies."""
    keys: list[str] = []
    cells: dict[tuple[str, int], list[str]] = {}
    for i, group_list in enumerate(analyses):
        for a in group_list:
            for label, c in a.configs.items():
                if c.match_key not in keys:
                    keys.append(c.match_key)
                q = a.summaries[label][a.options.metric]
                mem = a.summaries[label].get("peak_memory_mib")
                text = f"{_cell(q, a.options.metric)}" + (
                    f", {_cell(mem, 'peak_memory_mib')} MiB" if mem and mem.n else ""
                )
                mark = " ★" if label == a.best else ""
                cells.setdefault((c.match_key, i), []).append(f"{c.model}: {text}{mark}")
    columns = ["configuration"] + [s.name for s in studies]
    rows = [[k] + ["; ".join(cells.get((k, i), ["-"])) for i in range(len(studies))] for k in sorted(keys)]
    caption = "Mean ± std of the quality metric (and peak memory) per study; ★ = best in its group."
    return Table("cross", "Side by side across studies", columns, rows, [], caption)


def cross_decision_table(studies: list[StudyResults], decisions: list[list[list[Recommendation]]]) -> Table:
    titles = [e.description for e in PRIORITIES.entries()]
    rows = []
    for p, title in enumerate(titles):
        row = [title]
        for per_study in decisions:
            row.append("; ".join(recommended(recs[p]) for recs in per_study))
        rows.append(row)
    return Table("cross-decisions", "Recommendations side by side", ["priority"] + [s.name for s in studies], rows)
