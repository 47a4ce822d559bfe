"""Figures for the report, as self-contained inline SVG (matplotlib, no display, no JavaScript, no network).

Each builder takes one `Analysis` (one comparable group) and returns a `FigureOut`: the SVG, or a note
saying why there is no data for it, so a report never shows an empty chart. A configuration keeps its
colour in every figure. Diagnostics figures (AdaLoRA ranks, DoRA trajectories, condition numbers) read the
runs' ``diagnostics/`` artifacts; see `artifacts.py` for the layouts they accept.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from oneml.analysis.artifacts import rank_matrices, trajectories
from oneml.analysis.decision import MEMORY, Analysis
from oneml.analysis.metrics import metric
from oneml.analysis.results import Configuration

_STYLE = {
    "svg.fonttype": "none",  # text stays text: smaller files, crisp and searchable in the browser
    "svg.hashsalt": "oneml",  # deterministic ids, so the same results give the same report
    "font.family": "sans-serif",  # matplotlib's own DejaVu Sans first; the SVG names fallbacks for the browser
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.6,
    "axes.edgecolor": "#6b7280",
    "axes.titlesize": 10,
    "legend.frameon": False,
    "legend.fontsize": 8,
}
BEST, CONTENDER, UNDECIDED, OTHER = "#1d4ed8", "#60a5fa", "#fbbf24", "#cbd5e1"


@dataclass(frozen=True)
class FigureOut:
    key: str
    title: str
    caption: str
    svg: str | None
    note: str = ""
    """Why there is no figure (when ``svg`` is None)."""


def colours(labels: list[str]) -> dict[str, str]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: _hex(cmap(i % cmap.N)) for i, label in enumerate(sorted(labels))}


def _hex(rgba) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgba[:3])


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig, key: str) -> str:
    """The figure as an inline <svg> element, its ids prefixed so several figures can share one page."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(_STYLE):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r'\bid="([^"]+)"', rf'id="{key}-\1"', text)
    text = re.sub(r'(href="#|url\(#)([^")]+)', rf"\1{key}-\2", text)
    # Scale with the page: drop the fixed size, keep the viewBox.
    return re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"', r'<svg\1 class="figure" role="img"', text, count=1)


def _styled(build: Callable[[Analysis, dict[str, str]], FigureOut]):
    def wrapper(a: Analysis, palette: dict[str, str]) -> FigureOut:
        import matplotlib

        with matplotlib.rc_context(_STYLE):
            return build(a, palette)

    wrapper.__name__ = build.__name__
    wrapper.__doc__ = build.__doc__
    return wrapper


def _no_data(key: str, title: str, why: str) -> FigureOut:
    return FigureOut(key, title, "", None, f"No data for this figure: {why}.")


def _mean_curve(runs_histories: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std across seeds on the union of logged steps; each run is interpolated within its own span."""
    steps = np.array(sorted({s for h in runs_histories for s, _ in h}), dtype=float)
    rows = []
    for h in runs_histories:
        xs, ys = np.array([s for s, _ in h], dtype=float), np.array([v for _, v in h], dtype=float)
        row = np.interp(steps, xs, ys)
        row[(steps < xs[0]) | (steps > xs[-1])] = np.nan
        rows.append(row)
    stack = np.vstack(rows)
    counts = np.sum(~np.isnan(stack), axis=0)
    mean = np.nanmean(stack, axis=0)
    std = np.array([np.nanstd(col, ddof=1) if k > 1 else 0.0 for col, k in zip(stack.T, counts, strict=True)])
    return steps, mean, std


@_styled
def convergence(a: Analysis, palette: dict[str, str]) -> FigureOut:
    key, title = "convergence", "Convergence: training loss per step"
    curves = {
        label: [r.histories["train_loss"] for r in c.runs if r.histories.get("train_loss")]
        for label, c in a.configs.items()
    }
    curves = {label: h for label, h in curves.items() if h}
    if not curves:
        return _no_data(key, title, "no run logged a train_loss history")
    fig = _figure(9, 4.2)
    ax = fig.add_subplot()
    for label, histories in sorted(curves.items()):
        steps, mean, std = _mean_curve(histories)
        ax.plot(steps, mean, color=palette[label], lw=1.6, label=f"{label} (n={len(histories)})")
        ax.fill_between(steps, mean - std, mean + std, color=palette[label], alpha=0.15, lw=0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    caption = "Mean training loss across seeds; the band is ± one standard deviation across seeds."
    return FigureOut(key, title, caption, _svg(fig, key))


def _bar_panel(ax, a: Analysis, key: str) -> None:
    """Means with their 95% intervals as points on an axis that starts near the data: a bar from 0 would make a
    0.7% difference invisible, and a bar's length means nothing when 0 is not a meaningful value of the metric."""
    m = metric(key)
    rows = [(label, s) for label, per in a.summaries.items() if (s := per.get(key)) is not None and s.n]
    rows.sort(key=lambda item: item[1].mean, reverse=not m.higher_is_better)  # best ends on top
    y = np.arange(len(rows))
    means = np.array([s.mean for _, s in rows])
    low = np.array([s.mean - s.ci_low if s.n > 1 else 0.0 for _, s in rows])
    high = np.array([s.ci_high - s.mean if s.n > 1 else 0.0 for _, s in rows])
    colour = [_status_colour(a, label) for label, _ in rows]
    ax.errorbar(means, y, xerr=[low, high], fmt="none", ecolor="#111827", capsize=3, lw=1, zorder=2)
    ax.scatter(means, y, c=colour, s=46, edgecolors="#111827", lw=0.6, zorder=3)
    for i, (_, s) in enumerate(rows):
        ax.text(s.mean, i + 0.18, f" {m.show(s.mean)}" + ("" if s.n > 1 else " (n=1)"), fontsize=7, va="bottom")
    lo, hi = float(np.min(means - low)), float(np.max(means + high))
    pad = 0.08 * (hi - lo) if hi > lo else 0.01 * max(abs(hi), 1e-9)
    ax.set_xlim(lo - pad, hi + 3 * pad)  # room on the right for the value labels
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_yticks(y, [label for label, _ in rows])
    ax.set_xlabel(f"{m.label} ({'higher' if m.higher_is_better else 'lower'} is better; axis not from 0)")
    ax.grid(axis="y", visible=False)


def _status_colour(a: Analysis, label: str) -> str:
    verdict = a.verdict(label)
    return {"best": BEST, "equivalent": CONTENDER, "inconclusive": UNDECIDED}.get(verdict, OTHER)


@_styled
def bars(a: Analysis, palette: dict[str, str]) -> FigureOut:
    key, title = "bars", f"{a.quality.label.capitalize()} per configuration"
    extra = "eval_token_accuracy" if a.options.metric != "eval_token_accuracy" else "eval_loss"
    keys = [a.options.metric] + ([extra] if any(a.mean(label, extra) is not None for label in a.configs) else [])
    fig = _figure(9 if len(keys) == 1 else 11, 0.9 + 0.32 * len(a.configs))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, k in zip(axes, keys, strict=True):
        _bar_panel(ax, a, k)
    caption = (
        f"Mean over seeds with 95% confidence intervals; the axis starts near the data, not at 0. Colours follow the "
        f"verdict on {a.quality.label}: dark blue = best, light blue = equivalent to the best (within the margin), "
        "amber = undecided, grey = worse."
    )
    return FigureOut(key, title, caption, _svg(fig, key))


def _strip(ax, groups: dict[str, list[tuple[str, float]]], palette: dict[str, str], rng) -> None:
    names = list(groups)
    ax.boxplot(
        [[v for _, v in groups[n]] for n in names],
        positions=range(len(names)),
        widths=0.5,
        showfliers=False,
        medianprops={"color": "#111827"},
        boxprops={"color": "#6b7280"},
        whiskerprops={"color": "#6b7280"},
        capprops={"color": "#6b7280"},
    )
    for i, n in enumerate(names):
        xs = i + rng.uniform(-0.15, 0.15, len(groups[n]))
        ax.scatter(xs, [v for _, v in groups[n]], s=18, c=[palette[lbl] for lbl, _ in groups[n]], zorder=3, lw=0)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")


@_styled
def distributions(a: Analysis, palette: dict[str, str]) -> FigureOut:
    key = "distributions"
    tracks = {c.track for c in a.configs.values()}
    by = "track" if len(tracks) > 1 else "method"
    title = f"Distribution of final results by {by}"
    keys = [k for k in (a.options.metric, "eval_token_accuracy") if any(c.values(k) for c in a.configs.values())]
    keys = list(dict.fromkeys(keys))
    if not keys:
        return _no_data(key, title, "no final evaluation metrics")
    fig = _figure(4.6 * len(keys), 3.8)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    rng = np.random.default_rng(0)  # jitter only; fixed so the report is reproducible
    for ax, k in zip(axes, keys, strict=True):
        groups: dict[str, list[tuple[str, float]]] = {}
        for label, c in sorted(a.configs.items()):
            group = c.track if by == "track" else c.method
            groups.setdefault(group or "-", []).extend((label, v) for v in c.values(k).values())
        _strip(ax, groups, palette, rng)
        ax.set_ylabel(metric(k).label)
    caption = f"Every finished run as a point (coloured by configuration) over a box plot per {by}."
    return FigureOut(key, title, caption, _svg(fig, key))


@_styled
def stability(a: Analysis, palette: dict[str, str]) -> FigureOut:
    key, title = "stability", f"Stability across seeds: {a.quality.label} of every seed"
    m = a.quality
    order = sorted(
        (label for label in a.configs if a.configs[label].values(m.key)),
        key=lambda label: a.mean(label, m.key),
        reverse=not m.higher_is_better,
    )
    if not any(len(a.configs[label].values(m.key)) > 1 for label in order):
        return _no_data(key, title, "every configuration has a single seed, so there is no spread to show")
    seeds = sorted({s for label in order for s in a.configs[label].values(m.key)})
    markers = dict(zip(seeds, "os^Dv<>pP*XhH8d" * 4, strict=False))
    fig = _figure(9, 0.9 + 0.36 * len(order))
    ax = fig.add_subplot()
    for seed in seeds:  # the same seed joined across configurations shows what pairing removes
        pts = [(a.configs[label].values(m.key).get(seed), i) for i, label in enumerate(order)]
        pts = [(x, y) for x, y in pts if x is not None]
        ax.plot([x for x, _ in pts], [y for _, y in pts], color="#d1d5db", lw=0.7, zorder=1)
        ax.scatter(
            [x for x, _ in pts],
            [y for _, y in pts],
            marker=markers[seed],
            s=26,
            zorder=3,
            c=[palette[order[int(y)]] for _, y in pts],
            edgecolors="white",
            lw=0.4,
        )
    for i, label in enumerate(order):
        ax.plot([a.mean(label, m.key)] * 2, [i - 0.3, i + 0.3], color="#111827", lw=1.5, zorder=2)
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel(f"{m.label} ({'higher' if m.higher_is_better else 'lower'} is better)")
    ax.grid(axis="y", visible=False)
    from matplotlib.lines import Line2D

    # Neutral legend entries: colour means configuration, the marker shape means seed.
    handles = [Line2D([], [], marker=markers[s], color="#6b7280", ls="", label=f"seed {s}") for s in seeds]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    caption = "One point per seed; the black tick is the mean; grey lines join the same seed across configurations."
    return FigureOut(key, title, caption, _svg(fig, key))


def _representative(c: Configuration, needle: str):
    """The lowest seed's run with artifacts whose file name contains ``needle``, and those artifacts' payloads.

    One run per configuration: seeds differ little in these diagnostics and one panel per seed would not fit.
    """
    for run in c.runs:
        hits = [payload for path, payload in sorted(run.artifacts.items()) if needle in path.rsplit("/", 1)[-1]]
        if hits:
            return run, hits
    return None


@_styled
def adalora_ranks(a: Analysis, palette: dict[str, str]) -> FigureOut:
    key, title = "adalora_ranks", "AdaLoRA rank allocation (layer x step)"
    found = [
        (label, hit) for label, c in sorted(a.configs.items()) if (hit := _representative(c, "adalora_ranks.json"))
    ]
    panels = [(label, run, m) for label, (run, hits) in found if (m := rank_matrices(hits[0])) is not None][:3]
    if not panels:
        why = (
            "no run has a readable diagnostics/adalora_ranks.json"
            if not found
            else "the rank artifact has an unknown layout"
        )
        return _no_data(key, title, why)
    rows = max(len(m.layers) for _, _, m in panels)
    fig = _figure(9, min(1.6 + 0.13 * rows, 9) * len(panels))
    for i, (label, run, m) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        image = ax.imshow(m.matrix, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_title(f"{label} (seed {run.seed})", loc="left")
        every = max(1, len(m.layers) // 30)
        ax.set_yticks(range(0, len(m.layers), every), m.layers[::every], fontsize=6)
        step_every = max(1, len(m.steps) // 12)
        ax.set_xticks(range(0, len(m.steps), step_every), [str(s) for s in m.steps[::step_every]])
        ax.set_xlabel("optimizer step")
        ax.grid(False)
        fig.colorbar(image, ax=ax, label="rank", shrink=0.9)
    caption = "Rank kept by AdaLoRA's budget allocator per adapted layer over training (one seed per configuration)."
    return FigureOut(key, title, caption, _svg(fig, key))


def _trajectory_figure(
    a: Analysis, palette: dict[str, str], key: str, title: str, needle: str, what: str, log: bool = False
) -> FigureOut:
    found = [(label, hit) for label, c in sorted(a.configs.items()) if (hit := _representative(c, needle))]
    series = [(label, run, s) for label, (run, hits) in found if (s := _merged(hits))]
    if not series:
        why = (
            f"no run has a readable diagnostics/*{needle}* artifact"
            if not found
            else "the artifact has an unknown layout"
        )
        return _no_data(key, title, why)
    names = list(dict.fromkeys(name for _, _, s in series for name in s))[:4]
    fig = _figure(4.5 * len(names), 3.4)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        for label, _, s in series:
            if name in s:
                t = s[name]
                ax.plot(t.steps, t.mean, color=palette[label], lw=1.5, label=label)
                if t.low is not None:
                    ax.fill_between(t.steps, t.low, t.high, color=palette[label], alpha=0.15, lw=0)
        ax.set_title(name, loc="left")
        ax.set_xlabel("optimizer step")
        if log:  # condition numbers span orders of magnitude
            ax.set_yscale("log")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    caption = f"{what} over training (one seed per configuration); lines are the median over layers, bands their range."
    return FigureOut(key, title, caption, _svg(fig, key))


def _merged(payloads: list) -> dict:
    out: dict = {}
    for payload in payloads:  # DoRA may write magnitude and direction to separate files
        out |= trajectories(payload)
    return out


@_styled
def dora_trajectories(a: Analysis, palette: dict[str, str]) -> FigureOut:
    return _trajectory_figure(
        a, palette, "dora", "DoRA magnitude and direction trajectories", "dora", "DoRA magnitude / direction change"
    )


@_styled
def condition_numbers(a: Analysis, palette: dict[str, str]) -> FigureOut:
    return _trajectory_figure(
        a, palette, "kappa", "Condition number of the adapter update", "kappa", "kappa(BA)", log=True
    )


def pareto_front(points: dict[str, tuple[float, float]], higher_is_better: bool) -> list[str]:
    """Labels not dominated on (memory: lower is better, quality): sorted by memory."""
    sign = 1 if higher_is_better else -1
    front, best = [], -np.inf
    for label, (_memory, q) in sorted(points.items(), key=lambda kv: (kv[1][0], -sign * kv[1][1])):
        if sign * q > best:
            front.append(label)
            best = sign * q
    return front


@_styled
def pareto(a: Analysis, palette: dict[str, str]) -> FigureOut:
    key, title = "pareto", f"Memory vs {a.quality.label}: the Pareto frontier"
    points = {
        label: (a.mean(label, MEMORY), a.mean(label, a.options.metric))
        for label in a.configs
        if a.mean(label, MEMORY) is not None and a.mean(label, a.options.metric) is not None
    }
    if len(points) < 2:
        return _no_data(key, title, "fewer than two configurations recorded both peak memory and quality")
    front = pareto_front(points, a.quality.higher_is_better)
    fig = _figure(9, 4.4)
    ax = fig.add_subplot()
    fx, fy = [points[lbl][0] for lbl in front], [points[lbl][1] for lbl in front]
    ax.step(fx, fy, where="post", color=BEST, lw=1.2, alpha=0.6, zorder=1)
    for label, (x, y) in points.items():
        on = label in front
        edge, size = ("#111827", 60) if on else ("white", 34)
        name = f"{label} (frontier)" if on else label
        ax.scatter([x], [y], s=size, color=palette[label], edgecolors=edge, lw=1.3, zorder=3, label=name)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # labels beside clustered points would collide
    ax.set_xlabel("peak memory (MiB, lower is better)")
    ax.set_ylabel(f"{a.quality.label} ({'higher' if a.quality.higher_is_better else 'lower'} is better)")
    caption = (
        "Means over seeds. Outlined points form the frontier: no other configuration uses less memory and does better."
    )
    return FigureOut(key, title, caption, _svg(fig, key))


FIGURES: tuple[Callable[[Analysis, dict[str, str]], FigureOut], ...] = (
    bars,
    convergence,
    stability,
    distributions,
    pareto,
    adalora_ranks,
    dora_trajectories,
    condition_numbers,
)


def all_figures(a: Analysis, palette: dict[str, str], scope: str = "") -> list[FigureOut]:
    """Every figure for one group; ``scope`` keeps element ids unique when several groups share a page."""
    return [_scoped(build(a, palette), scope) for build in FIGURES]


def _scoped(fig: FigureOut, scope: str) -> FigureOut:
    if not scope:
        return fig
    if fig.svg is None:
        return FigureOut(f"{scope}-{fig.key}", fig.title, fig.caption, None, fig.note)
    svg = re.sub(rf'(id="|href="#|url\(#){fig.key}-', rf"\1{scope}-{fig.key}-", fig.svg)
    return FigureOut(f"{scope}-{fig.key}", fig.title, fig.caption, svg, fig.note)
