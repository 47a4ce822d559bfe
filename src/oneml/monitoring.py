"""Prometheus metrics of runs and studies (``--metrics-port``), exposed with prometheus_client.

Each training process keeps its run's latest numbers (step, loss, learning rate, tokens/s, memory, eval loss) in
``<folder>/<run id>.json``, one rename per write so that a reader sees the old file or the new one; the process
that serves the metrics (``oneml train``, ``oneml study run``, the launcher of a distributed run) reads every file of
its folder at each scrape, and adds the state of every run of the studies it drives. The folder reaches training
processes through ``ONEML_METRICS_DIR``: a study's trials in this process, in worker processes (``--workers``) and
the ranks a launcher starts all write there alike (only rank 0 of a run writes).

Why files rather than prometheus_client's multiprocess mode: that mode picks its storage when prometheus_client is
first imported (its variable must be set before any import in every process, which libraries loaded earlier can
defeat) and keeps one memory-mapped file per process id; a run's latest numbers, keyed by run id, are all a scrape
needs here. Served on 127.0.0.1 unless ``--metrics-host`` says otherwise: the numbers name runs and studies.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oneml.errors import OnemlError

ENV = "ONEML_METRICS_DIR"
"""The folder training processes write their run's numbers into (set by the process that serves them)."""
DEFAULT_HOST = "127.0.0.1"
PATH = "/metrics"
RUN_LABELS = ("run_id", "method", "study")

RUN_GAUGES: dict[str, tuple[str, str]] = {
    "oneml_train_step": ("step", "Optimizer steps taken so far."),
    "oneml_train_max_steps": ("max_steps", "Optimizer steps the run is set to take (train.max_steps)."),
    "oneml_train_loss": ("train_loss", "Training loss, mean over the steps since the previous log."),
    "oneml_train_learning_rate": ("learning_rate", "Learning rate at the last log."),
    "oneml_train_grad_norm": ("grad_norm", "Gradient norm before clipping at the last log."),
    "oneml_train_tokens_per_second": ("tokens_per_second", "Real (unpadded) training tokens per second since the "
                                      "previous log."),
    "oneml_memory_rss_bytes": ("rss_bytes", "Resident memory of the training process."),
    "oneml_memory_cuda_bytes": ("cuda_bytes", "CUDA memory allocated by torch in the training process."),
    "oneml_eval_loss": ("eval_loss", "Loss on the validation rows at the last evaluation."),
    "oneml_run_updated_timestamp_seconds": ("updated", "When the run last wrote its numbers (Unix time)."),
}  # fmt: skip
"""Per run, labelled run_id, method, study: metric name -> (key in the run's file, help)."""
RUN_STATE = "oneml_run_state"
STUDY_RUNS = "oneml_study_runs"
STATES = ("queued", "running", "paused", "finished", "failed", "pruned")
"""A study's run states: queued (not started in this call), running, paused (at a halving rung, waiting for the
next), finished, failed, pruned."""
EXPORTED = (*RUN_GAUGES, RUN_STATE, STUDY_RUNS)
"""Every metric name oneml exports (the Grafana dashboard's queries may name only these)."""


# --- the training side: a run's numbers in its file --------------------------------------------------------------


def write_run(folder: Path, labels: dict[str, str], values: dict[str, float]) -> None:
    """Publish one run's latest numbers (a whole file, renamed into place)."""
    from oneml.tracking.layout import write_text

    payload = {"labels": labels, "values": values | {"updated": time.time()}}
    write_text(folder / f"{labels['run_id']}.json", json.dumps(payload))


def _read_runs(folder: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(folder.glob("*.json")):
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):  # removed between glob and read, or not ours
            continue
        if isinstance(payload, dict) and isinstance(payload.get("labels"), dict):
            yield payload


# --- the serving side: studies' run states and the collector -----------------------------------------------------

_STUDIES: dict[str, Callable[[], list[tuple[str, str, str]]]] = {}
"""Study name -> a function returning (run id, method, state) of each of its runs, for the studies this process
drives (registered by the study's live view, oneml.study.progress)."""


def register_study(name: str, runs: Callable[[], list[tuple[str, str, str]]]) -> None:
    _STUDIES[name] = runs


class _Collector:
    """Builds every family at scrape time, from the run files and the registered studies."""

    def __init__(self, folder: Path):
        self.folder = folder

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        families = {name: GaugeMetricFamily(name, help_, labels=RUN_LABELS) for name, (_, help_) in RUN_GAUGES.items()}
        for payload in _read_runs(self.folder):
            labels = [str(payload["labels"].get(k, "")) for k in RUN_LABELS]
            values = payload.get("values", {})
            for name, (key, _) in RUN_GAUGES.items():
                if isinstance(values.get(key), (int, float)):
                    families[name].add_metric(labels, float(values[key]))
        yield from families.values()
        states = GaugeMetricFamily(RUN_STATE, "1 for each run's state.", labels=(*RUN_LABELS, "state"))
        counts = GaugeMetricFamily(STUDY_RUNS, "Runs of a study in each state.", labels=("study", "state"))
        for study, runs in list(_STUDIES.items()):
            listed = runs()
            for run_id, method, state in listed:
                states.add_metric([run_id, method, study, state], 1.0)
            for state in STATES:
                counts.add_metric([study, state], float(sum(s == state for _, _, s in listed)))
        yield states
        yield counts


@dataclass
class MetricsServer:
    """The HTTP endpoint and the folder its runs write into; ``close`` stops it and removes the folder."""

    httpd: Any
    folder: Path
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{PATH}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if os.environ.get(ENV) == str(self.folder):
            del os.environ[ENV]
        shutil.rmtree(self.folder, ignore_errors=True)
        _STUDIES.clear()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(port: int, host: str = DEFAULT_HOST) -> MetricsServer:
    """Listen on host:port (before anything is recorded, so that a port in use costs nothing) and point this
    process's training, and the processes it starts, at a fresh folder."""
    from prometheus_client import CollectorRegistry, start_http_server

    if not 0 < port < 65536:
        raise OnemlError(f"--metrics-port: must be a port number (1-65535), got {port}")
    folder = Path(tempfile.mkdtemp(prefix="oneml-metrics-"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(folder))
    try:
        httpd, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        shutil.rmtree(folder, ignore_errors=True)
        raise OnemlError(
            f"--metrics-port: cannot listen on {host}:{port}: {err.strerror or err}; pick another port"
        ) from None
    os.environ[ENV] = str(folder)
    return MetricsServer(httpd, folder, host, port)


def current_folder() -> Path | None:
    """Where this process's runs write their numbers, when something serves them."""
    folder = os.environ.get(ENV)
    return Path(folder) if folder and Path(folder).is_dir() else None
