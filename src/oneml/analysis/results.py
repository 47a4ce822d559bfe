"""Tracked results, read back from MLflow: the runs of a study (or of an experiment), grouped by configuration.

A *study* is every run tagged ``oneml.study=<name>`` (its parent run, tagged ``oneml.study_parent=true``,
holds no result and is skipped). An *experiment* is every run of one MLflow experiment, so that runs made
by hand with `oneml train` can be compared too. Either way runs are grouped by ``oneml.config_id`` (the
config hash without the seed): one group is one *configuration*, its runs are its seeds.

Only FINISHED runs enter the statistics; the others (failed, killed, still running, and any run tagged
``oneml.pruned=true`` whatever its status, since a pruned run stopped early) are kept aside, counted and
listed, with the reason from ``oneml.failure`` or ``oneml.pruned_reason``. When one configuration has
several finished runs for one seed (a rerun), the newest counts, since a rerun is what its author meant
to keep. Tuning runs (tagged ``oneml.tuning=true``, see `oneml.analysis.tuning`) chose a configuration's value
and are no result of it: they are in no configuration and not among the excluded, only in ``tuning``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oneml.errors import OnemlError, unknown
from oneml.tracking import tags as tag

HISTORY_KEYS = ("train_loss", "eval_loss")
"""Per-step histories the figures need (grad norm and learning rate stay in MLflow)."""
DIAGNOSTICS = "diagnostics"
MAX_ARTIFACT_BYTES = 32 * 2**20  # a layer x step matrix is kilobytes; anything this large is not ours to parse
_NOISE = ("train.seed", "tracking.", "data.stats.", "method.name")  # params that never define a configuration
_CONTEXT_KEYS = ("model", "data.dataset", "dataset")  # grid/param keys that say *where*, not *what*


@dataclass
class RunData:
    """One tracked run, as the analysis sees it."""

    mlflow_run_id: str
    name: str
    status: str
    config_id: str
    method: str
    model: str
    objective: str
    dataset: str
    seed: str
    track: str
    grid: dict[str, str]
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    histories: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    """Parsed JSON diagnostics, by artifact path (``diagnostics/adalora_ranks.json``)."""

    @property
    def analysed(self) -> bool:
        return self.status == "FINISHED" and self.tags.get(tag.PRUNED, "").lower() != "true"

    @property
    def state(self) -> str:
        """'pruned' for a pruned run (whatever MLflow status it ended with), else the status in lower case."""
        return "pruned" if self.tags.get(tag.PRUNED, "").lower() == "true" else self.status.lower()

    @property
    def reason(self) -> str:
        """Why a run is not in the statistics (empty for one that is)."""
        if self.analysed:
            return ""
        return self.tags.get(tag.FAILURE) or self.tags.get(tag.PRUNED_REASON) or self.state


@dataclass
class Configuration:
    """The finished runs of one configuration (one per seed)."""

    config_id: str
    label: str
    match_key: str
    """The label without model and dataset: how one configuration is found again in another study."""
    method: str
    model: str
    objective: str
    dataset: str
    track: str
    runs: list[RunData]
    failed: list[RunData] = field(default_factory=list)
    """FAILED runs of this configuration (diverged, crashed, out of memory) whose seed has no finished run:
    never in the quality statistics, always in its failure rate."""

    def values(self, key: str) -> dict[str, float]:
        """``{seed: value}`` of one metric over this configuration's runs that recorded it."""
        return {r.seed: r.metrics[key] for r in self.runs if key in r.metrics}

    @property
    def group(self) -> tuple[str, str, str]:
        """Results are comparable only for one model, objective and dataset (a loss means something else elsewhere)."""
        return (self.model, self.objective, self.dataset)


@dataclass
class StudyResults:
    name: str
    source: str
    """'study' (runs tagged oneml.study) or 'experiment' (every run of an MLflow experiment)."""
    uri: str
    configs: list[Configuration]
    excluded: list[RunData]
    """Runs that are not FINISHED: counted and listed, never in the statistics."""
    notes: list[str] = field(default_factory=list)
    parent_tags: dict[str, str] = field(default_factory=dict)
    """Tags of the study's parent run (settings the study recorded for its report, e.g. halving); empty when
    there is none (an experiment, or a study recorded before parents existed)."""
    tuning: list[RunData] = field(default_factory=list)
    """The study's tuning runs, newest first (any status): the report's tuning section reads them, nothing else."""

    @property
    def runs(self) -> list[RunData]:
        return [r for c in self.configs for r in c.runs]

    def metric_keys(self) -> set[str]:
        return {k for r in self.runs for k in r.metrics}


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    from oneml.tracking.store import quiet_mlflow

    quiet_mlflow()
    return MlflowClient(tracking_uri=uri)


def _search(client, experiment_ids: list[str], filter_string: str = "") -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string, order_by=["attributes.start_time DESC"], page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def known_studies(uri: str) -> list[str]:
    """Every study name recorded in the store."""
    client = _client(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return sorted({r.data.tags[tag.STUDY] for r in _search(client, ids) if tag.STUDY in r.data.tags})


def load_study(name: str, uri: str, *, artifacts: bool = True) -> StudyResults:
    """The runs tagged ``oneml.study=name`` in any experiment of the store at ``uri``."""
    if "'" in name or "`" in name:
        raise OnemlError(f"study: a study name cannot contain quotes, got {name!r}")
    client = _client(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = _search(client, ids, f"tags.`{tag.STUDY}` = '{name}'") if ids else []
    if not runs:
        known = known_studies(uri)
        if not known:
            experiments = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
            raise OnemlError(
                f"unknown study {name!r}: no run in {uri} carries a study tag; "
                f"to compare runs made by hand use --experiment NAME (experiments: {experiments})"
            )
        raise unknown("study", name, known)
    return _assemble(client, name, "study", uri, runs, artifacts)


def load_experiment(name: str, uri: str, *, artifacts: bool = True) -> StudyResults:
    """Every run of the MLflow experiment ``name``, grouped by configuration."""
    client = _client(uri)
    experiments = client.search_experiments()
    match = [e for e in experiments if e.name == name]
    if not match:
        raise unknown("experiment", name, [e.name for e in experiments])
    return _assemble(client, name, "experiment", uri, _search(client, [match[0].experiment_id]), artifacts)


def _assemble(client, name: str, source: str, uri: str, mlflow_runs: list[Any], artifacts: bool) -> StudyResults:
    parents = [r for r in mlflow_runs if r.data.tags.get(tag.STUDY_PARENT, "").lower() == "true"]
    from oneml.analysis.tuning import is_tuning  # the tuning section imports this module

    everyone = [_run_data(r) for r in mlflow_runs if r not in parents]
    tuning = [r for r in everyone if is_tuning(r.tags)]
    runs = [r for r in everyone if not is_tuning(r.tags)]
    finished = [r for r in runs if r.analysed]
    excluded = [r for r in runs if not r.analysed]
    if not finished:
        counts = ", ".join(f"{n} {s}" for s, n in _count(r.state for r in excluded).items()) or "no runs"
        raise OnemlError(f"{source} {name!r}: no finished runs to analyse ({counts})")
    notes: list[str] = []
    kept = _newest_per_seed(finished, notes)
    for run in kept:
        _load_details(client, run, artifacts, notes)
    parent_tags = dict(parents[0].data.tags) if parents else {}
    configs = _configurations(kept + _failures(excluded, kept), source)
    return StudyResults(name, source, uri, configs, excluded, notes, parent_tags, tuning)


def _failures(excluded: list[RunData], finished: list[RunData]) -> list[RunData]:
    """FAILED runs that count against their configuration: one per seed, and none where a rerun of that seed
    finished (the rerun is what its author kept). Killed and pruned runs are not failures of the method."""
    done = {(r.config_id, r.seed) for r in finished}
    out: dict[tuple[str, str], RunData] = {}
    for run in excluded:
        key = (run.config_id, run.seed)
        if run.status == "FAILED" and key not in done and not run.config_id.startswith("run-"):
            out.setdefault(key, run)
    return list(out.values())


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def _run_data(run) -> RunData:
    tags, info = run.data.tags, run.info
    return RunData(
        mlflow_run_id=info.run_id,
        name=info.run_name or info.run_id[:12],
        status=info.status,
        config_id=tags.get(tag.CONFIG_ID) or f"run-{info.run_id[:12]}",
        method=tags.get(tag.METHOD) or run.data.params.get("method.name", "?"),
        model=tags.get(tag.MODEL) or run.data.params.get("model.name", "?"),
        objective=tags.get(tag.OBJECTIVE) or run.data.params.get("objective.name", "?"),
        dataset=tags.get(tag.DATASET) or run.data.params.get("data.dataset", "?"),
        seed=tags.get(tag.SEED) or run.data.params.get("train.seed", "0"),
        track=tags.get(tag.TRACK, ""),
        grid={k[len(tag.GRID_PREFIX) :]: v for k, v in tags.items() if k.startswith(tag.GRID_PREFIX)},
        tags=dict(tags),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
    )


def _newest_per_seed(runs: list[RunData], notes: list[str]) -> list[RunData]:
    seen: dict[tuple[str, str], RunData] = {}
    for run in runs:  # newest first, as searched
        key = (run.config_id, run.seed)
        if key in seen:
            notes.append(
                f"run {run.name} (seed {run.seed}) was superseded by a newer run of its configuration and seed"
            )
            continue
        seen[key] = run
    return list(seen.values())


def _load_details(client, run: RunData, artifacts: bool, notes: list[str]) -> None:
    for key in HISTORY_KEYS:
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.mlflow_run_id, key))
        if history:
            run.histories[key] = history
    _derive(run)
    if artifacts:
        try:
            run.artifacts = _diagnostics(client, run.mlflow_run_id)
        except Exception as err:  # an unreadable artifact store must not cost the whole report
            notes.append(f"run {run.name}: diagnostics not readable ({type(err).__name__}: {str(err)[:120]})")


def _derive(run: RunData) -> None:
    m = run.metrics
    peak = m.get("peak_cuda_mib", m.get("peak_rss_mib"))
    if peak is not None:
        m["peak_memory_mib"] = peak
    auc = loss_auc(run.histories.get("train_loss", []))
    if auc is not None:
        m["train_loss_auc"] = auc


def loss_auc(history: list[tuple[int, float]]) -> float | None:
    """Area under the training-loss curve divided by its step span: the mean loss over training.

    Lower means the loss came down earlier (or further). Normalising by the span keeps runs of different
    lengths on one scale; a single point is its own mean.
    """
    points = [(s, v) for s, v in history if math.isfinite(v)]
    if not points:
        return None
    if len(points) == 1 or points[-1][0] == points[0][0]:
        return points[-1][1]
    area = sum((s1 - s0) * (v0 + v1) / 2 for (s0, v0), (s1, v1) in zip(points, points[1:], strict=False))
    return area / (points[-1][0] - points[0][0])


def _diagnostics(client, run_id: str) -> dict[str, Any]:
    """Every JSON file under ``diagnostics/`` (one folder level deep), parsed; other files are ignored."""
    files, folders = [], [DIAGNOSTICS]
    for _ in range(2):
        entries = [e for folder in folders for e in client.list_artifacts(run_id, folder)]
        files += [e for e in entries if not e.is_dir and e.path.endswith(".json")]
        folders = [e.path for e in entries if e.is_dir]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="oneml-diag-") as tmp, _no_progress_bars():
        for entry in files:
            if (entry.file_size or 0) > MAX_ARTIFACT_BYTES:
                continue
            local = client.download_artifacts(run_id, entry.path, tmp)
            try:
                out[entry.path] = json.loads(Path(local).read_text())
            except (ValueError, OSError):
                continue  # a half-written or foreign file: the figure that wanted it says there is no data
    return out


@contextmanager
def _no_progress_bars():
    """MLflow draws a progress bar per downloaded file on stderr; a report reads dozens of small files."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _configurations(runs: list[RunData], source: str) -> list[Configuration]:
    by_id: dict[str, list[RunData]] = {}
    for run in sorted(runs, key=lambda r: not r.analysed):  # finished runs first: they name the configuration
        by_id.setdefault(run.config_id, []).append(run)
    parts = _label_parts(by_id) if source == "experiment" else _grid_parts(by_id)
    configs = []
    for config_id, everyone in by_id.items():
        everyone.sort(key=lambda r: _seed_order(r.seed))
        members = [r for r in everyone if r.analysed]
        first = (members or everyone)[0]
        label = " ".join([first.method, *(text for _, text in parts[config_id])])
        match = " ".join([first.method, *(text for key, text in parts[config_id] if not _is_context(key))])
        configs.append(
            Configuration(
                config_id,
                label,
                match,
                first.method,
                first.model,
                first.objective,
                first.dataset,
                first.track,
                members,
                [r for r in everyone if not r.analysed],
            )
        )
    _disambiguate(configs)
    return sorted(configs, key=lambda c: c.label)


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), "") if seed.lstrip("-").isdigit() else (0, seed)


def _is_context(key: str) -> bool:
    return key.startswith(_CONTEXT_KEYS)


def _grid_parts(by_id: dict[str, list[RunData]]) -> dict[str, list[tuple[str, str]]]:
    """Study runs carry their grid values as tags: those, less the method and seed, make the label."""
    skip = ("method", "method.name", "seed", "train.seed")
    grids = {cid: {k: v for k, v in members[0].grid.items() if k not in skip} for cid, members in by_id.items()}
    if not any(members[0].grid for members in by_id.values()):  # a study without grid tags: labels from params
        return _label_parts(by_id)
    return {cid: _shorten(sorted(grid.items())) for cid, grid in grids.items()}


def _label_parts(by_id: dict[str, list[RunData]]) -> dict[str, list[tuple[str, str]]]:
    """Runs made by hand have no grid: the label shows the params that differ between configurations.

    Method-specific params (``method.*``) are compared among configurations of the same method only, so a
    LoRA rank is not "different" merely because full fine-tuning has none.
    """
    params = {cid: _defining(members[0].params) for cid, members in by_id.items()}
    method = {cid: members[0].method for cid, members in by_id.items()}
    out = {}
    for cid, mine in params.items():
        differing = []
        for key, value in sorted(mine.items()):
            peers = [p for other, p in params.items() if not key.startswith("method.") or method[other] == method[cid]]
            if len({p.get(key) for p in peers}) > 1:
                differing.append((key, value))
        out[cid] = _shorten(differing)
    return out


def _defining(params: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if not k.startswith(_NOISE)}


def _shorten(items: list[tuple[str, str]], limit: int = 5) -> list[tuple[str, str]]:
    """``(key, "short=value")`` pairs: the last dotted component as the name (``method.r`` -> ``r``) unless two
    keys share it, values cut to 24 characters, at most ``limit`` items (labels must fit a table cell)."""
    lasts = [k.rsplit(".", 1)[-1] for k, _ in items]
    out = []
    for (key, value), last in zip(items, lasts, strict=True):
        short = last if lasts.count(last) == 1 and not _is_context(key) else key
        out.append((key, f"{short}={value if len(value) <= 24 else value[:23] + '…'}"))
    if len(out) > limit:
        out = out[:limit] + [("", f"+{len(out) - limit} more")]
    return out


def _disambiguate(configs: list[Configuration]) -> None:
    labels = _count(c.label for c in configs)
    for c in configs:
        if labels[c.label] > 1:
            c.label = f"{c.label} [{c.config_id[:6]}]"


def check_store(uri: str) -> None:
    """A SQLite store must already exist: opening a missing one would create an empty database; a server must
    answer."""
    from oneml.tracking.store import check_server

    check_server(uri)
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        if not path.is_file():
            raise OnemlError(f"--root/--tracking-uri: no runs recorded at {path} (no MLflow database)")


def load_many(studies: list[str], experiments: list[str], uri: str) -> list[StudyResults]:
    """Studies by name, then experiments by name, in the order given."""
    if not studies and not experiments:
        raise OnemlError("study: name a study (oneml report STUDY) or an experiment (--experiment NAME)")
    check_store(uri)
    return [load_study(n, uri) for n in studies] + [load_experiment(n, uri) for n in experiments]


def concurrency_levels(runs: list[RunData]) -> list[str]:
    """The distinct numbers of trials that ran at once beside these runs (`tag.CONCURRENT_TRIALS`; runs recorded
    before the tag existed count as alone). More than one means their tokens/s do not compare like for like."""
    return sorted({r.tags.get(tag.CONCURRENT_TRIALS, "1") for r in runs})
