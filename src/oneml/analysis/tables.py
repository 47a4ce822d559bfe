"""The report's tables as plain data, rendered alike to HTML, Markdown, CSV and the terminal."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from oneml.analysis.decision import (
    METHOD_COMPLEXITY,
    PRIORITIES,
    UNKNOWN_COMPLEXITY,
    Analysis,
    Recommendation,
    complexity,
    format_p,
    signed,
)
from oneml.analysis.metrics import metric, summary_keys
from oneml.analysis.results import StudyResults
from oneml.analysis.stats import Summary


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
    rows = [[r.title, r.choice or "—", r.numbers, r.evidence] for r in recommendations]
    classes = ["" if r.choice is None else "best" if r.choice == a.best else "contender" for r in recommendations]
    caption = (
        f"Quality metric: {a.quality.label}; alpha {a.options.alpha:g} (Holm-corrected); tolerance "
        f"{a.options.tolerance:.0%}; {len(a.contenders)} of {len(a.configs)} configuration(s) are contenders."
    )
    return Table(
        "decision", "Decision guide", ["priority", "recommended", "numbers", "evidence"], rows, classes, caption
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
    return sorted(
        a.configs,
        key=lambda label: (
            label != a.best,
            label not in a.contenders,
            quality[label] is None,
            sign * (quality[label] or 0),
        ),
    )


def _recorded(a: Analysis, cost: bool) -> list[str]:
    available = {k for per in a.summaries.values() for k, s in per.items() if s.n}
    keys = [k for k in summary_keys(available) if metric(k).cost == cost and k != "trainable_params"]
    return [k for k in keys if k != a.options.metric]


def quality_table(a: Analysis) -> Table:
    q = a.options.metric
    keys = _recorded(a, cost=False)
    columns = ["configuration", "method", "seeds", f"{metric(q).label} mean ± std [95% CI]", "CV"]
    columns += [metric(k).label for k in keys]
    rows, classes = [], []
    for label in _order(a):
        per, s = a.summaries[label], a.summaries[label][q]
        cv = f"{s.cv:.2%}" if s.n > 1 and math.isfinite(s.cv) else "-"
        rows.append([label, a.configs[label].method, str(len(a.configs[label].runs)), _cell(s, q, True), cv])
        rows[-1] += [_cell(per.get(k), k) for k in keys]
        classes.append(_status(a, label))
    caption = "Mean ± sample std (ddof=1) over seeds; brackets: 95% confidence interval of the mean; CV = std / mean."
    return Table("configs", "Quality per configuration", columns, rows, classes, caption)


def cost_table(a: Analysis) -> Table:
    keys = _recorded(a, cost=True)
    columns = ["configuration"] + [metric(k).label for k in keys]
    order = _order(a)
    rows = [[label] + [_cell(a.summaries[label].get(k), k) for k in keys] for label in order]
    caption = "Mean ± std over seeds. Mean train loss = area under the training-loss curve / steps (lower = faster)."
    return Table("costs", "Cost per configuration", columns, rows, [_status(a, label) for label in order], caption)


def _status(a: Analysis, label: str) -> str:
    return "best" if label == a.best else "contender" if label in a.contenders else "worse"


def comparison_table(a: Analysis) -> Table:
    m = a.quality
    columns = [
        "configuration",
        "vs best",
        "test",
        "n",
        "difference [95% CI]",
        "p",
        "Holm p",
        "Wilcoxon p",
        "d",
        "verdict",
    ]
    rows, classes = [], []
    for c in a.comparisons:
        ci = f" [{signed(c.ci_low, m)}, {signed(c.ci_high, m)}]" if math.isfinite(c.ci_low) else ""
        verdict = (
            "not tested" if not c.tested else "worse" if c.distinguishable(a.options.alpha) else "not distinguishable"
        )
        d = f"{c.cohen_d:.2f}" if math.isfinite(c.cohen_d) or c.tested else "-"
        diff = f"{signed(c.diff, m)}{ci}" if math.isfinite(c.diff) else "-"
        rows.append(
            [
                c.candidate,
                c.reference,
                c.test,
                str(c.n),
                diff,
                format_p(c.p),
                format_p(c.p_holm),
                format_p(c.wilcoxon_p),
                d,
                verdict,
            ]
        )
        classes.append("worse" if verdict == "worse" else "contender" if c.candidate in a.contenders else "")
    caption = (
        f"Every configuration against the best on {m.label} (difference = configuration − best; "
        f"{'higher' if m.higher_is_better else 'lower'} is better). Paired t-test over shared seeds, Holm-corrected "
        f"across the {sum(c.tested for c in a.comparisons)} tests; Wilcoxon signed-rank from 6 pairs; d = mean "
        "difference / sd of differences."
    )
    return Table("comparisons", "Comparisons with the best", columns, rows, classes, caption)


def rules_table() -> Table:
    rows = [[e.name, e.description, e.value.rule] for e in PRIORITIES.entries()]
    return Table("rules", "How each recommendation is made", ["priority", "title", "rule"], rows)


def complexity_table(methods: set[str]) -> Table:
    rows = [[name, str(rank), why] for name, (rank, why) in METHOD_COMPLEXITY.items()]
    rows += [
        [m, str(UNKNOWN_COMPLEXITY), "not in the table: ranked last"]
        for m in sorted(methods)
        if complexity(m) == UNKNOWN_COMPLEXITY
    ]
    classes = ["best" if r[0] in methods else "" for r in rows]
    return Table("complexity", "Method complexity ranking (1 = simplest)", ["method", "rank", "why"], rows, classes)


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
            row.append("; ".join((recs[p].choice or "—") for recs in per_study))
        rows.append(row)
    return Table("cross-decisions", "Recommendations side by side", ["priority"] + [s.name for s in studies], rows)
