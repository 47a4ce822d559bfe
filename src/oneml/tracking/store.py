"""The MLflow store: a SQLite file under the run root by default, any tracking URI when given.

We talk to MLflow through an explicit `MlflowClient` (not the fluent global state), so one process can
record several runs, and a failure in one cannot leave another's run open.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from oneml.errors import OnemlError
from oneml.tracking import tags as tag

_SECRET = re.compile(r"(token|secret|password|passwd|api[_-]?key|credential)", re.IGNORECASE)
_PARAM_LIMIT = 6000  # MLflow's maximum param value length


def quiet_mlflow() -> None:
    """MLflow and alembic narrate database creation on stderr at INFO; users need warnings only."""
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def resolve_tracking_uri(uri: str | None, root: str | Path) -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else sqlite:///<root>/mlflow.db.

    Callers pass the most specific URI they have: the --tracking-uri option, else a config's tracking.uri. So
    every command resolves in one order: option > config tracking.uri > $MLFLOW_TRACKING_URI > the default.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


SERVER_TIMEOUT_S = 10.0


def check_server(uri: str, field: str = "--tracking-uri") -> None:
    """An http(s) tracking URI must answer before anything is recorded to it or read from it: MLflow's client
    retries a refused connection with backoff for minutes, which reads as a hang. Any HTTP answer will do (a
    server behind a login answers 401, and MLflow then says what is wrong); only no answer at all is refused."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=SERVER_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as err:
        why = getattr(err, "reason", None) or err
        raise OnemlError(f"{field}: no MLflow server answers at {uri} ({why})") from None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys with string values; values of keys that look like secrets are masked."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
            continue
        text = "***" if _SECRET.search(str(key)) and value else str(value)
        out[name] = text[:_PARAM_LIMIT]
    return out


class RunRecorder:
    """One MLflow run: created RUNNING, ended FINISHED or FAILED (with the reason as a tag)."""

    def __init__(self, uri: str, root: str | Path, experiment: str, artifact_location: str | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        quiet_mlflow()
        check_server(uri, "tracking.uri")
        self.uri = uri
        root = Path(root).resolve()
        # Without an explicit artifact_location a local store writes artifacts to ./mlruns of the cwd.
        location = artifact_location or ((root / "artifacts").as_uri() if _is_local_store(uri) else None)
        try:
            with _creation_lock(uri):
                self.client = MlflowClient(tracking_uri=uri)
                exp = self.client.get_experiment_by_name(experiment)  # creates a new store's tables
                exp_id = exp.experiment_id if exp else _create_experiment(self.client, experiment, location)
            if exp is not None:
                _same_location(exp, artifact_location)
        except mlflow.exceptions.MlflowException as err:
            raise OnemlError(f"tracking.uri: cannot open the MLflow store at {uri}: {_first_line(err)}") from None
        self.experiment_id = exp_id
        self.run_id: str | None = None

    def start(self, name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        return self.run_id

    def close_orphans(self, run_id: str) -> int:
        """Mark KILLED the records of oneml run ``run_id`` left RUNNING by a process of this machine that died
        without ending them (kill -9, a crash, power loss): a rerun starts a new record, the old one must not
        look alive. Records of live processes and of other machines are left alone."""
        from oneml.tracking.system import process_alive, process_tags

        host = process_tags()[tag.HOST]
        query = f"tags.`{tag.RUN_ID}` = '{run_id}' and attributes.status = 'RUNNING'"
        closed = 0
        for run in self.client.search_runs([self.experiment_id], query):
            pid = run.data.tags.get(tag.PID, "")
            if run.data.tags.get(tag.HOST) == host and pid.isdigit() and not process_alive(int(pid)):
                reason = "interrupted: its process died (kill -9 or crash)"
                self.client.set_tag(run.info.run_id, tag.FAILURE, reason)
                self.client.set_terminated(run.info.run_id, "KILLED")
                closed += 1
        return closed

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if _is_number(v)]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_artifacts(self, path: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_path)

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, reason: str, status: str = "FAILED") -> None:
        """FAILED, or KILLED for an interrupted run (Ctrl-C, SIGTERM), which a rerun continues."""
        self.set_tags({tag.FAILURE: reason})
        self.client.set_terminated(self.run_id, status)


@contextmanager
def _creation_lock(uri: str):
    """Held while a process opens a SQLite store and creates its experiment. Processes started together on a new
    root (a shell loop with '&', an array job) would otherwise each create the tables and run MLflow's
    migrations on the same file, and all but one fail ('duplicate column name', 'table ... already exists').
    SQLite's own busy timeout (MLflow sets 20 s) covers the writes that come after; a server serialises its own."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, and no way to make creation safe here
        yield
        return
    path = Path(uri[len("sqlite:///") :])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _create_experiment(client, name: str, location: str | None) -> str:
    """A new experiment; if another process (of another machine, on a server) created it meanwhile, that one."""
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        _same_location(exp, location)
        return exp.experiment_id


def _same_location(exp, wanted: str | None) -> None:
    """MLflow fixes an experiment's artifact location at creation; a different one asked later cannot apply."""
    if wanted and exp.artifact_location.rstrip("/") != wanted.rstrip("/"):
        raise OnemlError(
            f"tracking.artifact_location: experiment {exp.name!r} already stores its artifacts at "
            f"{exp.artifact_location}; name another tracking.experiment to use {wanted}"
        )


def _is_number(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def list_runs(uri: str, experiment: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Recent runs, newest first, as plain dicts for `oneml runs`."""
    from mlflow.tracking import MlflowClient

    quiet_mlflow()
    check_server(uri)
    client = MlflowClient(tracking_uri=uri)
    experiments = client.search_experiments()
    if experiment is not None:
        experiments = [e for e in experiments if e.name == experiment]
    if not experiments:
        return []
    runs = client.search_runs([e.experiment_id for e in experiments], order_by=["start_time DESC"], max_results=limit)
    return [
        {
            "mlflow_run_id": r.info.run_id,
            "name": r.info.run_name,
            "status": r.info.status,
            "start_time": r.info.start_time,
            "params": r.data.params,
            "metrics": r.data.metrics,
            "tags": r.data.tags,
        }
        for r in runs
    ]
