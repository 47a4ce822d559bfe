"""Per-configuration tuning as evidence: which value each configuration got, on what numbers, and how much it
mattered (torch-free: it reads tracked tags and metrics only).

A study with `tune:` (see `oneml.study.tune`) first runs short tuning runs per configuration, then the final runs
at each configuration's chosen value; the comparison reads the final runs only. The tags, one contract for the
study that writes them and the report that reads them:

- tuning runs: ``oneml.tuning=true``, ``oneml.tuning.template=<id>`` (the configuration it tunes, as its track
  defines it: its config id with the tuned keys at their base values), ``oneml.tuning.value.<key>=<candidate>``;
  once the value is chosen ``oneml.tuning.for=<config id of the final configuration>`` and
  ``oneml.tuning.chosen=true|false``;
- final runs of a tuned configuration: ``oneml.tuning.template=<id>`` and ``oneml.tuned.<key>=<chosen value>``;
- the study's parent run: ``oneml.tune.grid`` (JSON), ``oneml.tune.metric``, ``oneml.tune.seeds``,
  ``oneml.tune.steps`` and, with halving among the candidates, ``oneml.tune.halving`` (``min_steps,eta``).

The sensitivity figure plots each configuration's validation metric against the tuned value. With halving every
candidate reached only the first rung, so the figure reads every candidate there (its caption says so).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from oneml.analysis.figures import _STYLE, FigureOut, _figure, _svg, colours
from oneml.analysis.metrics import metric
from oneml.analysis.results import RunData, StudyResults
from oneml.analysis.rungs import RUNG_PREFIX
from oneml.analysis.tables import Table
from oneml.tracking import tags as tag

TUNING_TAG = tag.TUNING
TEMPLATE_TAG = tag.TUNING_TEMPLATE
FOR_TAG = tag.TUNING_FOR
CHOSEN_TAG = tag.TUNING_CHOSEN
VALUE_PREFIX = tag.TUNING_VALUE_PREFIX
TUNED_PREFIX = tag.TUNED_PREFIX
TUNE_PREFIX = tag.TUNE_PREFIX


def is_tuning(tags: dict[str, str]) -> bool:
    return tags.get(TUNING_TAG, "").lower() == "true"


def tuning_tags(template_id: str, candidate: dict[str, str]) -> dict[str, str]:
    """A tuning run's tags at creation (candidate values already as tag text)."""
    return {TUNING_TAG: "true", TEMPLATE_TAG: template_id} | {VALUE_PREFIX + k: v for k, v in candidate.items()}


def chosen_tags(final_config_id: str, chosen: bool) -> dict[str, str]:
    """Set on every tuning run of a configuration once its value is chosen."""
    return {FOR_TAG: final_config_id, CHOSEN_TAG: "true" if chosen else "false"}


def final_tags(template_id: str, chosen: dict[str, str]) -> dict[str, str]:
    """A tuned configuration's final runs: the configuration they tuned, and the values they use."""
    return {TEMPLATE_TAG: template_id} | {TUNED_PREFIX + k: v for k, v in chosen.items()}


def tune_tags(grid: dict, metric_key: str, seeds: list[int], steps: int, halving: tuple[int, int] | None) -> dict:
    tags = {"grid": json.dumps(grid), "metric": metric_key, "seeds": ",".join(map(str, seeds)), "steps": str(steps)}
    if halving is not None:
        tags["halving"] = f"{halving[0]},{halving[1]}"
    return {TUNE_PREFIX + k: v for k, v in tags.items()}


@dataclass(frozen=True)
class Setup:
    keys: list[str]
    metric: str
    seeds: list[str]
    steps: int
    halving: tuple[int, int] | None


def setup(study: StudyResults) -> Setup | None:
    """The tuning settings the study recorded; None for a study without tuning runs."""
    tags = study.parent_tags
    if not study.tuning:
        return None
    try:
        keys = list(json.loads(tags[TUNE_PREFIX + "grid"]))
        halving = tags.get(TUNE_PREFIX + "halving")
        rung = tuple(int(x) for x in halving.split(",")) if halving else None
        seeds = [s for s in tags[TUNE_PREFIX + "seeds"].split(",") if s]
        return Setup(keys, tags[TUNE_PREFIX + "metric"], seeds, int(tags[TUNE_PREFIX + "steps"]), rung)  # type: ignore[arg-type]
    except (KeyError, ValueError):
        return None


@dataclass
class Candidate:
    values: tuple[str, ...]
    """The candidate's value of each tuned key, as tag text, in the order of Setup.keys."""
    finals: list[float]
    """Its seeds' validation values at the tuning budget (finished runs)."""
    first_rung: list[float]
    """Its seeds' values at the first halving rung (with halving)."""
    pruned: bool
    failed: int
    chosen: bool

    def mean(self) -> float | None:
        return sum(self.finals) / len(self.finals) if self.finals and not self.failed else None


@dataclass
class Tuned:
    """One configuration's tuning: its candidates, in the grid's order."""

    template: str
    label: str
    track: str
    method: str
    candidates: list[Candidate]

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.chosen), None)


def tuned(study: StudyResults) -> list[Tuned]:
    """Every tuned configuration of the study with its candidates, labelled as the report labels its final runs."""
    found = setup(study)
    if found is None:
        return []
    labels = {r.tags.get(TEMPLATE_TAG): c.label for c in study.configs for r in c.runs if TEMPLATE_TAG in r.tags}
    by_template: dict[str, list[RunData]] = {}
    for run in study.tuning:
        by_template.setdefault(run.tags.get(TEMPLATE_TAG, "?"), []).append(run)
    out = []
    for template, runs in by_template.items():
        first = runs[0]
        label = labels.get(template) or " ".join(
            [first.method, *(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in first.grid.items())]
        )
        out.append(Tuned(template, label, first.track, first.method, _candidates(runs, found)))
    return sorted(out, key=lambda t: (t.track, t.label))


def _candidates(runs: list[RunData], found: Setup) -> list[Candidate]:
    groups: dict[tuple[str, ...], list[RunData]] = {}
    for run in sorted(runs, key=lambda r: _number(r.tags.get(VALUE_PREFIX + found.keys[0], ""))):
        groups.setdefault(tuple(run.tags.get(VALUE_PREFIX + k, "?") for k in found.keys), []).append(run)
    out = []
    for values, members in groups.items():
        seen: dict[str, RunData] = {}
        for run in members:  # newest first as searched: one run per seed
            seen.setdefault(run.seed, run)
        members = list(seen.values())
        finished = [r for r in members if r.analysed and found.metric in r.metrics]
        rung = f"{RUNG_PREFIX}{found.halving[0]}.value" if found.halving else None
        first_rung = [float(r.tags[rung]) for r in members if rung and rung in r.tags]
        out.append(
            Candidate(
                values,
                [r.metrics[found.metric] for r in finished],
                [v for v in first_rung if math.isfinite(v)],
                any(r.state == "pruned" for r in members),
                sum(r.status == "FAILED" for r in members),
                any(r.tags.get(CHOSEN_TAG) == "true" for r in members),
            )
        )
    return out


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf  # non-numeric candidates keep their order after the numbers


def _show(values: tuple[str, ...]) -> str:
    return ", ".join(_fmt(v) for v in values)


def _fmt(text: str) -> str:
    try:
        return f"{float(text):g}" if text.strip() not in ("True", "False") else text
    except ValueError:
        return text


def _outcome(c: Candidate, m) -> str:
    mean = c.mean()
    if c.failed:
        return f"{_show(c.values)}: failed ({c.failed} seed{'s' * (c.failed > 1)})"
    if c.pruned:
        rung = f" ({m.show(sum(c.first_rung) / len(c.first_rung))})" if c.first_rung else ""
        return f"{_show(c.values)}: pruned{rung}"
    shown = m.show(mean) if mean is not None else "-"
    return f"{_show(c.values)}: {shown}{' ✓' if c.chosen else ''}"


def tuning_table(study: StudyResults) -> Table | None:
    """One row per tuned configuration: its chosen value, the validation mean there, and every candidate's."""
    found = setup(study)
    configs = tuned(study)
    if found is None or not configs:
        return None
    m = metric(found.metric)
    keys = ", ".join(found.keys)
    tracks = len({t.track for t in configs}) > 1
    columns = (["track"] if tracks else []) + ["configuration", f"chosen {keys}", f"{m.label} (validation)"]
    columns.append(f"every candidate: {m.label} mean over tuning seeds")
    rows, classes = [], []
    for t in configs:
        chosen = t.chosen
        mean = chosen.mean() if chosen else None
        row = [t.track] if tracks else []
        row += [t.label, _show(chosen.values) if chosen else "none (no candidate finished)"]
        row += [m.show(mean) if mean is not None else "-", "; ".join(_outcome(c, m) for c in t.candidates)]
        rows.append(row)
        classes.append("" if chosen else "worse")
    halving = (
        f"; successive halving (eta {found.halving[1]}, first rung at step {found.halving[0]}) pruned the others, "
        "whose values are at the rung they were pruned at"
        if found.halving
        else ""
    )
    caption = (
        f"Each configuration's {keys} was chosen on the validation rows: the candidate with the best {m.label} "
        f"({'higher' if m.higher_is_better else 'lower'} is better), mean over tuning seeds {', '.join(found.seeds)} "
        f"after {found.steps} steps{halving}. ✓ = chosen. Its final runs, which "
        "the rest of this report compares, used the chosen value with the study's seeds."
    )
    return Table("tuning", "Tuning: each configuration's chosen value", columns, rows, classes, caption)


def tuning_note(study: StudyResults) -> str | None:
    """One sentence for the report's warnings: what was tuned, on which rows, and what is compared (which rows the
    comparison reads is the report's own note)."""
    found = setup(study)
    if found is None:
        return None
    return (
        f"{', '.join(found.keys)} was tuned per configuration on the validation rows ({len(study.tuning)} tuning "
        "runs, left out of every statistic: see the tuning table); the comparison reads only the final runs, each at "
        "its configuration's chosen value."
    )


def _y(c: Candidate, found: Setup) -> float | None:
    """A candidate's height in the figure: at the first rung with halving (every candidate got there), else at the
    tuning budget."""
    if c.failed:
        return None
    values = c.first_rung if found.halving else c.finals
    return sum(values) / len(values) if values else None


def _profile(t: Tuned, index: int, found: Setup, higher: bool) -> list[tuple[str, float]]:
    """(value of key `index`, best y over the other keys' values) in candidate order: with one tuned key, each
    candidate's own y; NaN where every candidate with that value failed (the line breaks there)."""
    best: dict[str, float] = {}
    for c in t.candidates:
        y, x = _y(c, found), c.values[index]
        mine = best.setdefault(x, math.nan)
        if y is not None and (math.isnan(mine) or (y > mine if higher else y < mine)):
            best[x] = y
    return list(best.items())


def sensitivity(study: StudyResults, palette: dict[str, str] | None = None, scope: str = "") -> FigureOut | None:
    """Validation metric against the tuned value, one line per configuration, the chosen value circled."""
    import matplotlib

    found, configs = setup(study), tuned(study)
    if found is None or not configs:
        return None
    m = metric(found.metric)
    palette = {**colours([t.label for t in configs]), **(palette or {})}
    key = f"{scope}tuning-sensitivity"
    names = [k.rsplit(".", 1)[-1].replace("_", " ") for k in found.keys]
    with matplotlib.rc_context(_STYLE):
        fig = _figure(2.5 + 4.6 * len(found.keys), 3.8)
        axes = fig.subplots(1, len(found.keys), squeeze=False)[0]
        for index, ax in enumerate(axes):
            _panel(ax, configs, index, found, palette)
            ax.set_xlabel(found.keys[index])
            ax.set_ylabel(f"{m.label} (validation rows)")
        axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        svg = _svg(fig, key)
    where = (
        f"at step {found.halving[0]}, the first halving rung (every candidate reached it)"
        if found.halving
        else f"after {found.steps} steps"
    )
    name = " / ".join(names)
    caption = (
        f"{m.label.capitalize()} on the validation rows {where} against the tuned {name}, mean over tuning seeds; one "
        f"line per configuration, its chosen value circled, × where a candidate failed. Flat lines = robust to the "
        f"{name}: the choice matters little. A steep or peaked line = the configuration needs its own {name}, and "
        "comparing it at a shared one would be unfair."
    )
    if len(found.keys) > 1:
        caption += " With several tuned keys each panel shows, per value, the best over the other keys' values."
    return FigureOut(key, f"Sensitivity to the tuned {name}", caption, svg)


def _panel(ax, configs: list[Tuned], index: int, found: Setup, palette: dict[str, str]) -> None:
    higher = metric(found.metric).higher_is_better
    texts = list(dict.fromkeys(c.values[index] for t in configs for c in t.candidates))
    numbers = [_number(x) for x in texts]
    numeric = all(math.isfinite(n) for n in numbers)
    position = dict(zip(texts, numbers if numeric else range(len(texts)), strict=True))
    for t in configs:
        points = _profile(t, index, found, higher)
        if not points:
            continue
        colour = palette[t.label]
        ax.plot(
            [position[x] for x, _ in points],
            [y for _, y in points],
            marker="o",
            ms=4,
            lw=1.6,
            color=colour,
            label=t.label,
        )
        failed = [position[x] for x, y in points if math.isnan(y)]
        if failed:  # at the foot of the axis, whatever its scale: there is no value to put it at
            ax.scatter(failed, [0.02] * len(failed), marker="x", color=colour, transform=ax.get_xaxis_transform())
        chosen = t.chosen
        y = _y(chosen, found) if chosen else None
        if y is not None:
            ax.scatter(
                [position[chosen.values[index]]], [y], s=140, facecolors="none", edgecolors=colour, lw=1.8, zorder=4
            )
    # Learning rates and ratios span decades: a log axis spaces their grid evenly.
    if numeric and min(numbers) > 0 and max(numbers) / min(numbers) >= 20:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(list(position.values()), [_fmt(x) for x in texts])
