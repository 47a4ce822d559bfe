"""A run trained elsewhere (an Argo pod, another machine), read back from its MLflow store.

A finished run's artifacts are the run folder training published: config.yaml, metrics.json, data_stats.json,
model/ and diagnostics/ (and eval/ once evaluated). Downloaded into ``<root>/runs/<run id>/`` (through a staging
folder and one rename, like a local run), they let `oneml eval` and `oneml export` open it as if it had been
trained here; the artifacts come from wherever the experiment keeps them (S3, MinIO, a server's proxy).

Torch-free, like everything in tracking/.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from oneml.errors import OnemlError
from oneml.tracking import layout
from oneml.tracking import tags as tag

_RUN_ID = re.compile(r"^[0-9a-f]{1,64}$")


def fetch_run(spec: str, root: Path, uri: str, field: str = "RUN") -> Path | None:
    """The folder of the finished run whose id is ``spec`` (or starts with it), downloaded from the store at
    ``uri`` into ``root``; None when ``spec`` is no run id or the store holds no finished run with it."""
    if not _RUN_ID.match(spec) or (uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file()):
        return None  # a missing SQLite file would be created empty by opening it
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    from oneml.tracking.store import check_server, quiet_mlflow

    quiet_mlflow()
    check_server(uri)
    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    query = f"tags.`{tag.RUN_ID}` LIKE '{spec}%' and attributes.status = 'FINISHED'"
    runs = client.search_runs(ids, query, order_by=["start_time DESC"]) if ids else []
    found = sorted({r.data.tags[tag.RUN_ID] for r in runs})
    if not found:
        return None
    if len(found) > 1:
        names = ", ".join(found[:5])
        raise OnemlError(f"{field}: {spec!r} matches {len(found)} runs in {uri} ({names}); give more of the id")
    newest = runs[0]  # a rerun's record is what its author kept
    target = layout.run_dir(root, found[0])
    staging = layout.staging_dir(target)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        try:
            download_artifacts(run_id=newest.info.run_id, dst_path=str(staging), tracking_uri=uri)
        except Exception as err:  # the artifact store's own errors (no S3 keys, a bucket gone) in one line
            where = newest.info.artifact_uri
            raise OnemlError(f"{field}: cannot download run {found[0]} from {where}: {_first_line(err)}") from None
        if not (staging / layout.CONFIG_FILE).is_file():
            raise OnemlError(
                f"{field}: run {found[0]} in {uri} recorded no {layout.CONFIG_FILE} artifact; it cannot be rebuilt"
            )
        layout.publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _first_line(err: Exception) -> str:
    return f"{type(err).__name__}: " + (str(err).strip().splitlines() or [""])[0][:300]
