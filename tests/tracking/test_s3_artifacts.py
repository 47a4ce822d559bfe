"""Artifacts on an S3 API: moto's server mode on 127.0.0.1 plays S3 (or MinIO), MLflow reaches it through boto3
with MLFLOW_S3_ENDPOINT_URL and dummy keys, exactly as it would a real bucket. A run's artifacts land in the bucket,
and `oneml report`, `oneml export` and `oneml eval` read them back from there."""

from __future__ import annotations

import shutil

import pytest

from clikit import run_cli
from serverkit import free_port

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[dev]')")
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (pip install -e '.[dev]')")

BUCKET = "oneml"
TINY = ["model.name=tiny-llama", "method.r=4", "data.max_samples=32", "data.eval_size=8", "data.max_length=64"]
TINY += ["train.max_steps=2", "train.batch_size=4", "train.eval_before=false", "train.diagnostics_every=1"]


@pytest.fixture
def s3(monkeypatch):
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()


def _keys(client, prefix: str) -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}


def test_artifacts_land_in_the_bucket_and_are_read_back(s3, tmp_path, capsys):
    root = tmp_path / "root"
    settings = TINY + [f"tracking.root={root}", f"tracking.artifact_location=s3://{BUCKET}/oneml"]
    settings += ["tracking.experiment=on-s3"]
    code, _, err = run_cli(capsys, "train", *(a for s in settings for a in ("--set", s)), "--quiet")
    assert code == 0, err
    (run_dir,) = (root / "runs").iterdir()
    keys = _keys(s3, "oneml/")
    adapter = next(k for k in keys if k.endswith("/artifacts/model/adapter_model.safetensors"))
    prefix = adapter.removesuffix("model/adapter_model.safetensors")
    for name in ("config.yaml", "metrics.json", "data_stats.json", "diagnostics/kappa.json"):
        assert prefix + name in keys, name
    local = (run_dir / "model" / "adapter_model.safetensors").read_bytes()
    assert s3.get_object(Bucket=BUCKET, Key=adapter)["Body"].read() == local
    assert not (root / "artifacts").exists()  # not the default local place

    from oneml.analysis.results import load_experiment
    from oneml.tracking import resolve_tracking_uri

    results = load_experiment("on-s3", resolve_tracking_uri(None, root))
    (run,) = results.configs[0].runs
    assert run.artifacts["diagnostics/kappa.json"]["steps"] == [1, 2]  # the report's diagnostics, read from S3
    assert not results.notes
    code, _, err = run_cli(capsys, "report", "--experiment", "on-s3", "--root", str(root), "--out", str(tmp_path / "r"))
    assert code == 0, err

    shutil.rmtree(run_dir)  # as if trained elsewhere: only the store and the bucket know the run
    out = tmp_path / "exported"
    code, _, err = run_cli(capsys, "export", run_dir.name, "--out", str(out), "--mode", "adapter", "--root", str(root))
    assert code == 0, err
    assert (out / "adapter_model.safetensors").read_bytes() == local
    code, out, err = run_cli(
        capsys, "eval", run_dir.name, "-b", "perplexity", "--limit", "4", "--root", str(root), "-q"
    )
    assert code == 0, err
    assert "bench/perplexity/" in out and (run_dir / "eval" / "perplexity.json").is_file()
    assert any(k.endswith("/artifacts/eval/perplexity.json") for k in _keys(s3, prefix))  # recorded to S3 too


def test_unreadable_bucket_is_one_line(s3, tmp_path, capsys):
    """The run is in the store but its bucket is gone: the fetch says so in one line, and leaves no folder."""
    root = tmp_path / "root"
    settings = TINY + [f"tracking.root={root}", f"tracking.artifact_location=s3://{BUCKET}/gone"]
    code, _, err = run_cli(capsys, "train", *(a for s in settings for a in ("--set", s)), "--quiet")
    assert code == 0, err
    (run_dir,) = (root / "runs").iterdir()
    shutil.rmtree(run_dir)
    for key in _keys(s3, ""):
        s3.delete_object(Bucket=BUCKET, Key=key)
    s3.delete_bucket(Bucket=BUCKET)
    code, _, err = run_cli(capsys, "export", run_dir.name, "--out", str(tmp_path / "x"), "--root", str(root))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"RUN: cannot download run {run_dir.name} from s3://{BUCKET}/gone/" in err
    assert sorted(p.name for p in (root / "runs").iterdir()) == []
