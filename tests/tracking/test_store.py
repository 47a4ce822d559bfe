"""The MLflow store: where runs go, what params look like, secrets masked, FAILED/FINISHED states."""

from __future__ import annotations

from pathlib import Path

from oneml.tracking import RunRecorder, list_runs, resolve_tracking_uri
from oneml.tracking.store import flatten
from oneml.tracking.system import hardware, package_versions


def test_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_flatten_masks_secrets_and_truncates():
    flat = flatten({"model": {"name": "m", "hf_token": "hf_abc"}, "api_key": "k", "x": "y" * 7000, "empty": {}})
    assert flat["model.name"] == "m"
    assert flat["model.hf_token"] == "***" and flat["api_key"] == "***"
    assert len(flat["x"]) == 6000
    assert flat["empty"] == "{}"


def test_recorder_lifecycle_and_artifact_location(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    uri = resolve_tracking_uri(None, root)
    root.mkdir()
    rec = RunRecorder(uri, root, "exp")
    rec.start("ok-run", {"oneml.run_id": "abc"})
    rec.log_params({"a": "1"})
    rec.log_metrics({"loss": 1.5, "nan": float("nan"), "flag": True}, step=3)
    (tmp_path / "f.txt").write_text("hi")
    rec.log_artifact(tmp_path / "f.txt")
    rec.finish()
    bad = RunRecorder(uri, root, "exp")
    bad.start("bad-run", {})
    bad.fail("RuntimeError: boom")
    runs = {r["name"]: r for r in list_runs(uri, "exp")}
    assert runs["ok-run"]["status"] == "FINISHED" and runs["ok-run"]["metrics"] == {"loss": 1.5}
    assert runs["bad-run"]["status"] == "FAILED" and runs["bad-run"]["tags"]["oneml.failure"] == "RuntimeError: boom"
    assert (root / "artifacts").is_dir() and not (tmp_path / "mlruns").exists()
    assert list(Path(root / "artifacts").rglob("f.txt"))


def test_versions_and_hardware_are_reported():
    versions = package_versions()
    assert versions["torch"].startswith("2.") and versions["oneml"] != "not installed"
    hw = hardware()
    assert int(hw["cpu_count"]) >= 1 and float(hw["ram_gib"]) > 0
