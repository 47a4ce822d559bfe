"""Replication: a study's final configurations run again with fresh seeds, as a study of their own, and whether
each recommendation of its guide held.

`oneml study replicate STUDY.yaml --seeds 100,101,102`. The final configurations are the ones the original's guide
compares: the configurations of its finished runs (so the survivors of halving, and the tuned values where the
study tuned), each rebuilt from the config its run recorded (<root>/runs/<run id>/config.yaml) with a new seed.
A configuration none of whose runs finished has no recorded config and is not rerun. The seeds must be new to the
study: a seed it used (or that its sequential rounds may use) would give the very same run id, hence the same run.

The replication is a separate study, `<name>-replicate`, its runs and parent run tagged `oneml.replicate_of=<name>`:
it never enters the original's statistics, and its guide is judged on its runs alone at the full alpha (a fresh
fixed design, not one more look). Running the same command again resumes it; other seeds join the same
replication.

Priority by priority (and group by group) the two guides are compared: `held` (the same decided winner),
`changed` (another decided winner), `not confirmed` (decided before, inconclusive now), `decided now`
(inconclusive before, decided now), `inconclusive both`, `no answer` (nothing to choose from in either). The table
is printed and written as replication.csv and replication.md into the replication's report folder
(<root>/reports/<name>-replicate), after its HTML report (a later `oneml report` of the replication rewrites the
folder without them).
"""

from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass
from pathlib import Path

from oneml.errors import OnemlError
from oneml.study.expand import Trial, expand
from oneml.study.spec import SequentialSeeds, StudySpec
from oneml.study.state import root_of
from oneml.tracking import layout
from oneml.tracking import tags as tag

REPLICATE_TAG = tag.REPLICATE_OF
SUFFIX = "-replicate"
COLUMNS = ["group", "priority", "title", "before", "after", "outcome"]


@dataclass(frozen=True)
class Held:
    """One row of the guide in the original and in the replication."""

    group: str
    priority: str
    title: str
    before: str
    after: str
    outcome: str
    """held, changed, not confirmed, decided now, inconclusive both or no answer."""


@dataclass
class Replication:
    name: str
    rows: list[Held]
    folder: Path
    """The replication's report folder (report.html, replication.csv, replication.md)."""
    result: object
    """The StudyResult of running the replication's trials."""


def parse_seeds(text: str) -> list[int]:
    """``100,101,102``: two or more distinct integers (one seed measures no spread)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OnemlError(f"--seeds: expected integers separated by commas, e.g. 100,101,102, got {text!r}") from None
    if len(set(seeds)) != len(seeds) or len(seeds) < 2:
        raise OnemlError(f"--seeds: expected two or more distinct integers, e.g. 100,101,102, got {text!r}")
    return seeds


def replicate_study(spec: StudySpec, seeds: list[int], executor=None, options=None, console=None, progress=True):
    """Rerun the final configurations with ``seeds`` as `<name>-replicate` and compare the two guides. Every input
    is checked (study recorded, seeds fresh, configs found) before anything runs or is recorded."""
    from oneml.analysis import DecisionOptions, analyse_study
    from oneml.study.run import run_study

    first = expand(spec)[0]
    uri = _uri(first)
    original = _load(spec.name, uri, f"study {spec.name}: no finished run to replicate; run it first (oneml study run)")
    clash = sorted(set(seeds) & used_seeds(spec, first, original))
    if clash:
        raise OnemlError(
            f"--seeds: {', '.join(map(str, clash))} already used by study {spec.name}; a replication needs fresh seeds"
        )
    name = spec.name + SUFFIX
    trials = final_trials(spec, first, original, seeds, name)
    update = {"name": name, "seeds": seeds, "halving": None}
    update |= {"tune": None} if "tune" in type(spec).model_fields else {}  # the replication reruns tuned values
    replica = spec.model_copy(update=update)
    result = run_study(replica, executor, options, console, progress, trials=trials)
    _tag_parent(replica, trials[0], spec.name)
    replayed = _load(name, uri, "")
    before = analyse_study(original, DecisionOptions())
    after = analyse_study(replayed, DecisionOptions()) if replayed is not None else []
    rows = compare_guides(before, after)
    folder = _write(replayed, rows, Path(first.config.tracking.root), name)
    return Replication(name, rows, folder, result)


def _uri(first: Trial) -> str:
    from oneml.tracking import resolve_tracking_uri

    return resolve_tracking_uri(first.config.tracking.uri, root_of(first))


def _load(name: str, uri: str, missing: str):
    """The study's results, or (``missing`` empty) None when it has none; a store that does not exist is not
    created by looking (nothing is recorded for a refused command)."""
    from oneml.analysis.results import load_study

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        if missing:
            raise OnemlError(missing)
        return None
    try:
        return load_study(name, uri, artifacts=False)
    except OnemlError:
        if missing:
            raise OnemlError(missing) from None
        return None


def used_seeds(spec: StudySpec, first: Trial, original) -> set[int]:
    """Every seed the study ran or may still run: its runs', its YAML's (a sequential study's whole range up to
    max) and those added by hand."""
    from oneml.study.sequential import read_plan

    plan = read_plan(spec, first)
    used = set(spec.seeds.values(spec.seeds.max)) if isinstance(spec.seeds, SequentialSeeds) else set(spec.seeds)
    used |= set(plan["extended"]) | set((plan["pending"] or {}).get("seeds", []))
    runs = [r for c in original.configs for r in c.runs + c.failed] + list(original.excluded)
    used |= {int(r.seed) for r in runs if r.seed.lstrip("-").isdigit()}
    return used


def final_trials(spec: StudySpec, first: Trial, original, seeds: list[int], name: str) -> list[Trial]:
    """One trial per final configuration and seed, from the config its first finished run recorded."""
    import yaml

    from oneml.config import resolve

    trials = []
    for c in original.configs:
        if not c.runs:
            continue
        run = c.runs[0]
        root = Path(run.params.get("tracking.root") or first.config.tracking.root)
        path = layout.run_dir(root, run.tags.get(tag.RUN_ID, "?")) / layout.CONFIG_FILE
        if not path.is_file():
            raise OnemlError(f"study {spec.name}: the config of {c.label} is not at {path}; it cannot be rerun")
        data = yaml.safe_load(path.read_text())
        tags = {k: v for k, v in data["tracking"].get("tags", {}).items() if k != "mlflow.parentRunId"}
        data["tracking"]["tags"] = tags | {tag.STUDY: name, REPLICATE_TAG: spec.name}
        grid = {k.removeprefix(tag.GRID_PREFIX): v for k, v in tags.items() if k.startswith(tag.GRID_PREFIX)}
        for seed in seeds:
            one = copy.deepcopy(data)
            one["train"]["seed"] = seed
            trials.append(Trial(tags.get(tag.TRACK, "main"), grid, seed, resolve(one)))
    return trials


def _tag_parent(replica: StudySpec, first: Trial, original: str) -> None:
    from oneml.study.sequential import parent_run

    parent = parent_run(replica, first)
    if parent is not None:
        parent[0].set_tag(parent[1], REPLICATE_TAG, original)


def _row(rec, a) -> tuple[str, str | None]:
    """How a row reads (decided: X / inconclusive: A, B / none) and the config id of a decided winner."""
    if rec is None:
        return "not replicated (no finished run)", None
    if rec.verdict == "decided":
        return f"decided: {rec.choice}", a.configs[rec.choice].config_id
    if rec.verdict == "inconclusive":
        return f"inconclusive: {', '.join(rec.candidates)}", None
    return "none", None


@dataclass(frozen=True)
class Side:
    """A row of one guide: its verdict and, when decided, the config id of its winner."""

    verdict: str
    winner_id: str | None = None


def outcome(before: Side | None, after: Side | None) -> str:
    """held / changed / not confirmed / decided now / inconclusive both / no answer."""
    b, a = (side.verdict if side is not None else "none" for side in (before, after))
    if b == a == "decided":
        return "held" if before.winner_id == after.winner_id else "changed"  # type: ignore[union-attr]
    if b == "decided":
        return "not confirmed"
    if a == "decided":
        return "decided now"
    return "inconclusive both" if b == a == "inconclusive" else "no answer"


def compare_guides(before: list, after: list) -> list[Held]:
    """Every row of the original's guide against the same row (same group, same priority) of the replication's."""
    from oneml.analysis import decision_table

    after_rows = {(a.group, rec.priority): (rec, a) for a in after for rec in decision_table(a)}
    rows = []
    for a in before:
        for rec in decision_table(a):
            other, b = after_rows.get((a.group, rec.priority), (None, None))
            text_before, id_before = _row(rec, a)
            text_after, id_after = _row(other, b)
            now = Side(other.verdict, id_after) if other is not None else None
            verdict = outcome(Side(rec.verdict, id_before), now)
            rows.append(Held(" · ".join(a.group), rec.priority, rec.title, text_before, text_after, verdict))
    return rows


def _write(replayed, rows: list[Held], root: Path, name: str) -> Path:
    from oneml.analysis import default_out, write_report

    folder = default_out(root, [name])
    if replayed is not None:
        write_report([replayed], folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    writer.writerows([[getattr(r, k) for k in COLUMNS] for r in rows])
    (folder / "replication.csv").write_text(out.getvalue())
    (folder / "replication.md").write_text(markdown(rows, name))
    return folder


def markdown(rows: list[Held], name: str) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"# Replication {name}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(getattr(r, k)) for k in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"
