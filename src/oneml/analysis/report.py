"""The decision report: HTML (self-contained), Markdown (figures as SVG files beside it) and CSV exports.

`build_report` turns one study's tracked results into decisions, tables and figures; `write_report`
writes one or several studies (side by side) into an output folder, atomically: everything is staged in
a sibling folder that then replaces the old one, so a reader never sees half a report. A folder that is
not a oneml report is never replaced.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from oneml.analysis import html
from oneml.analysis.decision import (
    DEFAULT_ALPHA,
    DEFAULT_WEIGHTS,
    Analysis,
    DecisionOptions,
    Recommendation,
    analyse_study,
    metric_note,
    replicated,
)
from oneml.analysis.decision import decision_table as decide_all
from oneml.analysis.figures import FigureOut, all_figures, colours
from oneml.analysis.results import StudyResults, concurrency_levels
from oneml.analysis.rungs import halving_note, rung_table
from oneml.analysis.sequential import look_alpha
from oneml.analysis.stopping import early_stopping_note
from oneml.analysis.tables import (
    Table,
    comparison_table,
    complexity_table,
    cost_table,
    cross_decision_table,
    cross_study_table,
    decision_table,
    excluded_table,
    group_title,
    quality_table,
    rules_table,
)
from oneml.analysis.tuning import sensitivity, tuning_note, tuning_table
from oneml.errors import OnemlError
from oneml.tracking import layout
from oneml.tracking import tags as tag

MARKER = ".oneml-report"
HETEROGENEOUS = ("hardware.", tag.SWITCH_PREFIX, "version.")


@dataclass
class StudyReport:
    study: StudyResults
    analyses: list[Analysis]
    decisions: list[list[Recommendation]]
    figures: list[list[FigureOut]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    banner: str = ""
    rungs: Table | None = None
    """Successive halving's rungs, when the study used it."""
    tuning: Table | None = None
    """Each configuration's tuned value, when the study tuned them."""
    tuning_figure: FigureOut | None = None
    """The validation metric against the tuned value, one line per configuration."""


def build_report(study: StudyResults, options: DecisionOptions, figures: bool = True, scope: str = "") -> StudyReport:
    analyses = analyse_study(study, options)
    report = StudyReport(study, analyses, [decide_all(a) for a in analyses])
    palette = colours([c.label for c in study.configs])
    multi = len(analyses) > 1
    if figures:
        scopes = [f"{scope}g{i}" if multi else scope for i in range(len(analyses))]
        report.figures = [all_figures(a, palette, s) for a, s in zip(analyses, scopes, strict=True)]
    report.warnings = _warnings(study, analyses)
    report.banner = banner(analyses)
    report.rungs = rung_table(study)
    report.tuning = tuning_table(study)
    if figures:
        report.tuning_figure = sensitivity(study, palette, scope)
    return report


def banner(analyses: list[Analysis]) -> str:
    """One line at the top when nothing in the guide is backed by replication."""
    if replicated(analyses):
        return ""
    return (
        "No claim in this guide is backed by replication: no comparison could be tested (a configuration needs "
        "two or more seeds, and so does the one it is compared with). Every row below is inconclusive; run at "
        "least 3 seeds per configuration to measure the spread."
    )


def _warnings(study: StudyResults, analyses: list[Analysis]) -> list[str]:
    out = []
    if len(analyses) > 1:
        out.append(
            f"{len(analyses)} groups (model · objective · dataset) are decided separately: losses differ in meaning"
        )
    for a in analyses:
        single = [label for label, c in a.configs.items() if len(c.runs) == 1]
        failed = [label for label, c in a.configs.items() if not c.runs]
        if failed:
            out.append(f"no finished run (every run failed) for: {', '.join(failed)}; they count in stability only")
        if single and len(single) == len(a.configs):
            out.append(
                "every configuration has one seed (n=1): no spread, no test; recommendations rest on means alone"
            )
        elif single:
            out.append(f"n=1 (no spread, no test) for: {', '.join(single)}")
        runs = [r for c in a.configs.values() for r in c.runs]
        levels = concurrency_levels(runs)
        if len(levels) > 1:
            out.append(
                f"speed not ranked: runs trained {' / '.join(levels)} trials at once ({tag.CONCURRENT_TRIALS}); "
                "concurrent trials share the GPU and the cores, so their tokens/s is not a solo run's; compare "
                "speed among runs of one --workers setting"
            )
        if note := metric_note(a):
            out.append(note)
        differing = _differing_tags(runs)
        if differing:
            out.append(f"runs differ in {', '.join(differing)}: speed and memory may not compare like for like")
    note = halving_note(study)
    if note:
        out.append(note)
    note = tuning_note(study)
    if note:
        out.append(note)
    note = early_stopping_note(study)
    if note:
        out.append(note)
    out += stage_notes(study)
    look = look_alpha(study.parent_tags, DEFAULT_ALPHA)
    if look is not None and analyses:  # the looks' error is corrected only when alpha was left to the study
        used = analyses[0].options.alpha
        out.append(look[1] if used == look[0] else f"{look[1]}; these verdicts use alpha {used:g} as given instead")
    out += _rows_note(study, analyses)
    if study.excluded:
        counts: dict[str, int] = {}
        for r in study.excluded:
            counts[r.state] = counts.get(r.state, 0) + 1
        listed = ", ".join(f"{n} {s}" for s, n in counts.items())
        out.append(f"{len(study.excluded)} run(s) are left out of every statistic ({listed}): see the last table")
    return out + study.notes


def stage_notes(study: StudyResults) -> list[str]:
    """Which model each stage track started from: the configuration its pick chose and the run it loaded."""
    labels = {c.config_id: c.label for c in study.configs}
    sources: dict[str, dict[tuple[str, str, str], None]] = {}
    for c in study.configs:
        for r in c.runs + c.failed:
            if tag.FROM_TRACK in r.tags:
                key = (r.tags[tag.FROM_TRACK], r.tags.get(tag.FROM_CONFIG, ""), r.tags.get(tag.FROM_RUN, ""))
                sources.setdefault(c.track, {})[key] = None
    out = []
    for track, picked in sorted(sources.items()):
        started = "; ".join(
            f"{labels.get(config, 'configuration ' + config)} of track {source} (its run {run})"
            for source, config, run in picked
        )
        out.append(f"track {track} started from {started}, picked on the validation rows")
    return out


def _rows_note(study: StudyResults, analyses: list[Analysis]) -> list[str]:
    """Which rows the guide compares on, and whether anything was selected on those same rows."""
    compared = {a.options.metric for a in analyses}
    if all(str(m).startswith("test_") for m in compared):
        return [f"compared on the test rows ({', '.join(sorted(compared))}): no selection read them"]
    selected = any(k.startswith((tag.HALVING_PREFIX, tag.TUNE_PREFIX)) for k in study.parent_tags)
    if selected:
        return [
            "selection and comparison on the same rows: halving or tuning chose on the validation rows this guide "
            "compares, which favours the chosen; set data.test_size (or data.test_fraction) to compare on rows "
            "nothing selected on"
        ]
    return ["no test split: the guide compares on the validation rows (nothing in this study selected on them)"]


def _differing_tags(runs) -> list[str]:
    keys = sorted({k for r in runs for k in r.tags if k.startswith(HETEROGENEOUS)})
    return [k for k in keys if len({r.tags.get(k) for r in runs}) > 1]


def default_out(root: Path, names: list[str]) -> Path:
    return root / "reports" / "-vs-".join(_safe(n) for n in names)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "study"


def write_report(studies: list[StudyResults], out: Path, options: DecisionOptions | None = None) -> dict[str, Path]:
    """Write report.html, report.md, figures/*.svg and the CSV exports into ``out``; return the files by name."""
    options = options or DecisionOptions()
    scopes = [f"s{i}" if len(studies) > 1 else "" for i in range(len(studies))]
    reports = [build_report(s, options, scope=scope) for s, scope in zip(studies, scopes, strict=True)]
    files = {
        "report.html": _html(reports, options),
        "report.md": _markdown(reports, options),
        "runs.csv": _runs_csv(studies),
        "configs.csv": _configs_csv(reports),
        "comparisons.csv": _comparisons_csv(reports),
        "decisions.csv": _decisions_csv(reports),
    }
    svgs = {f"figures/{f.key}.svg": f.svg for r in reports for group in r.figures for f in group if f.svg}
    svgs |= {f"figures/{r.tuning_figure.key}.svg": r.tuning_figure.svg for r in reports if r.tuning_figure}
    _publish(out, files | svgs)
    return {name: out / name for name in files}


def _publish(out: Path, files: dict[str, str]) -> None:
    out = out.resolve()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise OnemlError(f"--out: {out} exists and is not a oneml report folder; choose another folder")
    staging = layout.staging_dir(out)
    try:
        shutil.rmtree(staging, ignore_errors=True)
        for name, text in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text, encoding="utf-8")
        (staging / MARKER).write_text("written by oneml report; replaced as a whole on the next report\n")
        layout.publish(staging, out)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise OnemlError(f"--out: cannot write the report to {out}: {err.strerror or err}") from None


def _meta(study: StudyResults) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        oneml_version = version("oneml")
    except PackageNotFoundError:
        oneml_version = "unknown"
    source = f"runs tagged oneml.study={study.name}" if study.source == "study" else f"experiment {study.name}"
    return f"{source} · {study.uri} · generated {time.strftime('%Y-%m-%d %H:%M')} · oneml {oneml_version}"


def _cards(r: StudyReport) -> list[tuple[str, str]]:
    seeds = sorted({len(c.runs) for c in r.study.configs})
    span = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    return [
        ("configurations", str(len(r.study.configs))),
        ("finished runs", str(len(r.study.runs))),
        ("seeds per configuration", span),
        ("runs left out", str(len(r.study.excluded))),
    ]


def _study_html(r: StudyReport, options: DecisionOptions, scope: str = "") -> str:
    s, multi = r.study, len(r.analyses) > 1
    scopes = [f"{scope}g{i}" if multi else scope for i in range(len(r.analyses))]  # as build_report's figures
    parts = [f"<header><h1>Decision guide: {html.escape(s.name)}</h1>", html.paragraph(_meta(s), "meta"), "</header>"]
    parts += [html.banner(r.banner), html.cards(_cards(r)), html.warnings(r.warnings)]
    for a, recs, sc in zip(r.analyses, r.decisions, scopes, strict=True):
        t = decision_table(a, recs)
        t.title = f"Decision guide — {group_title(a)}" if multi else "Decision guide"
        parts.append(html.table(t, heading=2, scope=sc))
    parts.append("<h2>How the decisions are made</h2>")
    parts.append(html.table(rules_table(), title=False, scope=scope))
    weights = ", ".join(f"{k}={v:g}" for k, v in options.weights.items())
    parts.append(html.paragraph(f"Starting-point weights: {weights} (defaults: {_weights(DEFAULT_WEIGHTS)})", "meta"))
    ranking = html.table(complexity_table(s.configs), title=False, scope=scope)
    parts.append(html.details("Method complexity ranking", ranking))
    for a, sc in zip(r.analyses, scopes, strict=True):
        parts.append(f"<h2>Results{' — ' + html.escape(group_title(a)) if multi else ''}</h2>")
        parts += [html.table(t, scope=sc) for t in (quality_table(a), cost_table(a), comparison_table(a))]
    if r.rungs:
        parts.append(html.table(r.rungs, heading=2, scope=scope))
    if r.tuning:
        parts.append(html.table(r.tuning, heading=2, scope=scope))
    if r.tuning_figure:
        parts.append(html.figure(r.tuning_figure))
    for a, figs in zip(r.analyses, r.figures, strict=False):
        parts.append(f"<h2>Figures{' — ' + html.escape(group_title(a)) if multi else ''}</h2>")
        parts += [html.figure(f) for f in figs]
    if s.excluded:
        parts.append(html.table(excluded_table(s), heading=2, scope=scope))
    return f'<section class="study">{"".join(parts)}</section>'


def _weights(weights) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in weights.items())


def _html(reports: list[StudyReport], options: DecisionOptions) -> str:
    if len(reports) == 1:
        return html.page(f"oneml decision guide: {reports[0].study.name}", _study_html(reports[0], options))
    names = [r.study.name for r in reports]
    studies = [r.study for r in reports]
    head = [f"<header><h1>Comparison: {html.escape(' vs '.join(names))}</h1></header>"]
    head.append(html.table(cross_decision_table(studies, [r.decisions for r in reports]), heading=2))
    head.append(html.table(cross_study_table(studies, [r.analyses for r in reports]), heading=2))
    body = "".join(head) + "".join(_study_html(r, options, f"s{i}") for i, r in enumerate(reports))
    return html.page(f"oneml comparison: {' vs '.join(names)}", body)


def _md_table(t: Table) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"### {t.title}", ""]
    if t.caption:
        lines += [f"_{cell(t.caption)}_", ""]
    lines.append("| " + " | ".join(cell(c) for c in t.columns) + " |")
    lines.append("|" + "---|" * len(t.columns))
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines) + "\n"


def _study_markdown(r: StudyReport, options: DecisionOptions) -> list[str]:
    s = r.study
    out = [f"# Decision guide: {s.name}", "", _meta(s), ""]
    out += [f"> **{r.banner}**", ""] if r.banner else []
    out += [f"- {w}" for w in r.warnings] + ([""] if r.warnings else [])
    for a, recs in zip(r.analyses, r.decisions, strict=True):
        out += [f"## {group_title(a)}", "", _md_table(decision_table(a, recs))]
    out += ["## How the decisions are made", "", _md_table(rules_table()), _md_table(complexity_table(s.configs))]
    out += [f"Starting-point weights: {_weights(options.weights)}", ""]
    for a, figs in zip(r.analyses, r.figures or [[]] * len(r.analyses), strict=True):
        out += [f"## Results — {group_title(a)}", "", _md_table(quality_table(a)), _md_table(cost_table(a))]
        out.append(_md_table(comparison_table(a)))
        for f in figs:
            out += [f"### {f.title}", "", f"![{f.title}](figures/{f.key}.svg)" if f.svg else f"_{f.note}_", ""]
            out += [f.caption, ""] if f.caption and f.svg else []
    if r.rungs:
        out.append(_md_table(r.rungs))
    if r.tuning:
        out.append(_md_table(r.tuning))
    if r.tuning_figure:
        f = r.tuning_figure
        out += [f"### {f.title}", "", f"![{f.title}](figures/{f.key}.svg)", "", f.caption, ""]
    if s.excluded:
        out.append(_md_table(excluded_table(s)))
    return out


def _markdown(reports: list[StudyReport], options: DecisionOptions) -> str:
    lines: list[str] = []
    if len(reports) > 1:
        studies = [r.study for r in reports]
        lines += [f"# Comparison: {' vs '.join(s.name for s in studies)}", ""]
        lines.append(_md_table(cross_decision_table(studies, [r.decisions for r in reports])))
        lines.append(_md_table(cross_study_table(studies, [r.analyses for r in reports])))
    for r in reports:
        lines += _study_markdown(r, options)
    return "\n".join(lines) + "\n"


def _csv(header: list[str], rows: list[list[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _runs_csv(studies: list[StudyResults]) -> str:
    everything = [(s, r) for s in studies for r in s.runs + s.excluded]
    labels = {(s.name, r.mlflow_run_id): c.label for s in studies for c in s.configs for r in c.runs}
    keys = sorted({k for _, r in everything for k in r.metrics})
    header = ["study", "mlflow_run_id", "run", "status", "reason", "config_id", "configuration", "method", "model"]
    header += ["objective", "dataset", "track", "seed", "grid"] + keys
    rows = []
    for s, r in everything:
        row = [
            s.name,
            r.mlflow_run_id,
            r.name,
            r.status,
            r.reason,
            r.config_id,
            labels.get((s.name, r.mlflow_run_id), ""),
        ]
        row += [r.method, r.model, r.objective, r.dataset, r.track, r.seed, json.dumps(r.grid, sort_keys=True)]
        rows.append(row + [r.metrics.get(k, "") for k in keys])
    return _csv(header, rows)


def _configs_csv(reports: list[StudyReport]) -> str:
    header = ["study", "model", "objective", "dataset", "config_id", "configuration", "method", "track", "verdict"]
    header += ["metric", "n", "mean", "std", "cv", "ci_low", "ci_high", "interval", "warning"]
    rows = []
    for r in reports:
        for a in r.analyses:
            for label, per in a.summaries.items():
                c = a.configs[label]
                head = [r.study.name, *a.group, c.config_id, label, c.method, c.track, a.verdict(label)]
                rows += [
                    head + [k, s.n, s.mean, s.std, s.cv, s.ci_low, s.ci_high, s.interval, s.warning]
                    for k, s in per.items()
                    if s.n
                ]
    return _csv(header, rows)


def _comparisons_csv(reports: list[StudyReport]) -> str:
    header = ["study", "model", "objective", "dataset", "metric", "configuration", "best", "verdict", "margin"]
    header += ["test", "n", "n_configuration", "n_best", "diff", "ci_low", "ci_high", "ci_level", "eq_low", "eq_high"]
    header += ["p", "p_adjusted", "pairs", "effect", "effect_kind", "seeds_needed", "note"]
    rows = []
    for r in reports:
        for a in r.analyses:
            for c in a.comparisons:
                d = c.d
                rows.append(
                    [r.study.name, *a.group, c.metric, c.candidate, c.reference, c.verdict, c.margin, c.test, c.n]
                    + [d.n_candidate, d.n_reference, c.diff, c.ci_low, c.ci_high, 1 - c.alpha / c.family, c.eq_low]
                    + [c.eq_high, c.p, c.p_adjusted, c.family, d.effect, d.effect_kind, _blank(c.seeds_needed), c.note]
                )
    return _csv(header, rows)


def _blank(value: object) -> object:
    return "" if value is None else value


def _decisions_csv(reports: list[StudyReport]) -> str:
    header = ["study", "model", "objective", "dataset", "priority", "title", "verdict", "recommended", "n"]
    header += ["seeds_needed", "compute_seconds", "candidates", "numbers", "evidence", "rule"]
    rows = [
        [r.study.name, *a.group, d.priority, d.title, d.verdict, d.winner or "", d.n or "", _blank(d.seeds_needed)]
        + [_blank(d.cost_seconds), ";".join(d.candidates), d.numbers, d.evidence, d.rule]
        for r in reports
        for a, recs in zip(r.analyses, r.decisions, strict=True)
        for d in recs
    ]
    return _csv(header, rows)
