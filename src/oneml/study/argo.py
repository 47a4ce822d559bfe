"""`oneml study export-argo`: a study as an Argo Workflows manifest, one pod per run.

Each run of the expanded study becomes a container template whose pod runs `oneml train` on that run's resolved
config (a raw input artifact), so the pod computes the same run id as a local study would; a DAG with no edges
runs them all, `spec.parallelism` at a time. Tracking goes to an MLflow server (a pod's local SQLite store would
vanish with it) and artifacts to the experiment's artifact store (s3:// for S3 or MinIO), with the endpoint in
MLFLOW_S3_ENDPOINT_URL and the keys read from a Kubernetes Secret at run time, never written into the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from oneml import __version__
from oneml.errors import OnemlError
from oneml.monitoring import PATH

IMAGE = f"oneml:{__version__}"
"""The image `make image` builds from the Dockerfile (the exact versions of requirements.lock): oneml:<version>;
push it under a registry prefix and pass that name with --image."""
CONFIG_PATH = "/oneml/run.yaml"
RUN_ROOT = "/tmp/oneml-runs"  # pod-local: the run directory is a cache, MLflow and the artifact store keep results
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclass(frozen=True)
class ArgoOptions:
    image: str
    """Container image with oneml installed (its `oneml` command on PATH)."""
    tracking_uri: str
    """MLflow server the pods record to, e.g. http://mlflow.mlops:5000."""
    artifact_location: str | None = None
    """Experiment artifact store, e.g. s3://bucket/oneml (set when the experiment is created)."""
    s3_endpoint: str | None = None
    """MLFLOW_S3_ENDPOINT_URL for MinIO or another S3-compatible store."""
    s3_secret: str | None = None
    """Kubernetes Secret holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."""
    cpu: str = "4"
    memory: str = "16Gi"
    gpus: int = 0
    """nvidia.com/gpu per pod (whole GPUs: Kubernetes does not split one without a time-slicing device plugin)."""
    parallelism: int | None = None
    namespace: str | None = None
    service_account: str | None = None
    metrics_port: int | None = 8000
    """Port each pod serves Prometheus metrics on (`oneml train --metrics-port`), announced to Prometheus by the
    pod's prometheus.io/* annotations; None: no metrics."""


def _check(spec, options: ArgoOptions) -> None:
    uri = options.tracking_uri
    if not uri:
        raise OnemlError(
            "--tracking-uri: pods need an MLflow server they can reach (http://...); give --tracking-uri, "
            "tracking.uri in the study's base, or $MLFLOW_TRACKING_URI"
        )
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        raise OnemlError(
            f"--tracking-uri: pods need an MLflow server they can reach (http://...), got {uri!r}; "
            "a store inside a pod vanishes with it"
        )
    if spec.halving is not None:
        raise OnemlError("halving: successive halving decides between rungs; run it with --executor ray instead")
    if spec.eval is not None:
        raise OnemlError("eval: the evaluation stage is not exported; run `oneml eval` on the finished runs")
    if not isinstance(spec.seeds, list):
        raise OnemlError("seeds: sequential rounds look at the results between rounds; run them with --executor ray")
    if spec.tune is not None:
        raise OnemlError(
            "tune: tuning chooses each configuration's value before its final runs; run it with --executor ray"
        )
    staged = [name for name, track in spec.tracks.items() if track.from_ is not None]
    if staged:
        raise OnemlError(
            f"tracks.{staged[0]}.from: a stage starts from its source's finished run; run it with --executor ray"
        )
    if options.gpus < 0 or (options.parallelism is not None and options.parallelism < 1):
        raise OnemlError("--gpus must be 0 or more and --parallelism 1 or more")
    if options.metrics_port is not None and not 0 < options.metrics_port < 65536:
        raise OnemlError(f"--metrics-port: must be a port number (1-65535), got {options.metrics_port}")


def _run_config(trial, options: ArgoOptions) -> dict[str, Any]:
    """The trial's resolved config with tracking pointed at the cluster's services (the run id does not change)."""
    config = trial.config.to_dict()
    tracking = config["tracking"] | {"root": RUN_ROOT, "uri": options.tracking_uri}
    if options.artifact_location:
        tracking["artifact_location"] = options.artifact_location
    tracking["tags"] = {k: v for k, v in tracking["tags"].items() if k != "mlflow.parentRunId"}
    return config | {"tracking": tracking}


def _env(options: ArgoOptions) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "MLFLOW_TRACKING_URI", "value": options.tracking_uri}]
    if options.s3_endpoint:
        env.append({"name": "MLFLOW_S3_ENDPOINT_URL", "value": options.s3_endpoint})
    if options.s3_secret:
        ref = [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": options.s3_secret, "key": key}}} for key in SECRET_KEYS
        ]
        env += ref
    return env


def _resources(options: ArgoOptions) -> dict[str, Any]:
    requests = {"cpu": options.cpu, "memory": options.memory}
    limits: dict[str, str] = {"memory": options.memory}
    if options.gpus:
        limits["nvidia.com/gpu"] = str(options.gpus)  # extended resources go in limits (requests follow)
    return {"requests": requests, "limits": limits}


def _template(trial, config: dict[str, Any], options: ArgoOptions, study: str) -> dict[str, Any]:
    data = yaml.safe_dump(config, sort_keys=False)
    metadata: dict[str, Any] = {"labels": {"oneml.study": study, "oneml.run-id": trial.run_id}}
    command = ["oneml", "train", CONFIG_PATH, "--quiet"]
    if options.metrics_port is not None:
        # Prometheus' Kubernetes pod discovery scrapes pods by these annotations (the usual relabelling rules); the
        # pod listens on every interface, as the scrape comes from outside it.
        port = str(options.metrics_port)
        metadata["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": port,
            "prometheus.io/path": PATH,
        }
        command += ["--metrics-port", port, "--metrics-host", "0.0.0.0"]
    return {
        "name": f"run-{trial.run_id}",
        "metadata": metadata,
        "inputs": {"artifacts": [{"name": "run-config", "path": CONFIG_PATH, "raw": {"data": data}}]},
        "container": {
            "name": "main",
            "image": options.image,
            "command": command,
            "env": _env(options),
            "resources": _resources(options),
        },
    }


def workflow(spec, options: ArgoOptions) -> dict[str, Any]:
    """The Workflow manifest (plain data, ready for yaml.safe_dump)."""
    from oneml.study.expand import expand

    _check(spec, options)
    trials = expand(spec)  # every config validated here, before anything is written
    templates = [_template(t, _run_config(t, options), options, spec.name) for t in trials]
    tasks = [{"name": t["name"], "template": t["name"]} for t in templates]
    metadata: dict[str, Any] = {"generateName": f"oneml-{spec.name.lower().replace('_', '-').replace('.', '-')}-"}
    metadata["labels"] = {"oneml.study": spec.name}
    if options.namespace:
        metadata["namespace"] = options.namespace
    body: dict[str, Any] = {"entrypoint": "study", "parallelism": options.parallelism or spec.executor.workers}
    if options.service_account:
        body["serviceAccountName"] = options.service_account
    body["templates"] = [{"name": "study", "dag": {"tasks": tasks}}, *templates]
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": metadata, "spec": body}


def to_yaml(manifest: dict[str, Any], study: str) -> str:
    runs = len(manifest["spec"]["templates"]) - 1
    head = f"# oneml study {study}: {runs} runs, one pod each. Submit with: argo submit workflow.yaml --watch\n"
    return head + yaml.safe_dump(manifest, sort_keys=False, width=120)
