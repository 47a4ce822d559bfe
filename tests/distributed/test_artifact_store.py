"""tracking.artifact_location reaches MLflow's experiment: a file:// location stands in for s3:// here (the
same MLflow code path picks the artifact repository from the URI scheme; S3 itself is not faked)."""

from __future__ import annotations

import pytest

from oneml.config import load_run_config
from oneml.errors import OnemlError
from oneml.tracking import RunRecorder, list_runs, resolve_tracking_uri
from oneml.train import train

TINY = ["model.name=tiny-llama", "method.r=4", "data.max_samples=32", "data.eval_size=8", "data.max_length=64"]
TINY += ["train.max_steps=2", "train.batch_size=4", "train.eval_before=false"]


def test_artifacts_go_to_the_configured_store(tmp_path):
    store = tmp_path / "bucket" / "oneml"
    location = store.as_uri()
    cfg = load_run_config(None, TINY + [f"tracking.root={tmp_path / 'root'}", f"tracking.artifact_location={location}"])
    result = train(cfg, progress=False)
    (run,) = list_runs(resolve_tracking_uri(None, tmp_path / "root"))
    from mlflow.tracking import MlflowClient

    info = MlflowClient(result.tracking_uri).get_run(run["mlflow_run_id"]).info
    assert info.artifact_uri.startswith(location + "/")
    saved = store / info.run_id / "artifacts"
    assert (saved / "model" / "adapter_model.safetensors").is_file()
    assert (saved / "config.yaml").is_file() and (saved / "metrics.json").is_file()
    assert not (tmp_path / "root" / "artifacts").exists()  # not the default place


def test_an_experiment_keeps_the_location_it_was_created_with(tmp_path):
    uri = resolve_tracking_uri(None, tmp_path)
    RunRecorder(uri, tmp_path, "exp", (tmp_path / "a").as_uri())
    RunRecorder(uri, tmp_path, "exp", (tmp_path / "a").as_uri())  # the same again is fine
    with pytest.raises(OnemlError, match=r"^tracking.artifact_location: experiment 'exp' already stores"):
        RunRecorder(uri, tmp_path, "exp", (tmp_path / "b").as_uri())
