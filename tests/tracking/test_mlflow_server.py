"""A real `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifacts in a temporary folder): a study is
recorded to it over HTTP, resumed, reported from it and evaluated from it, as a user would, through
--tracking-uri and through $MLFLOW_TRACKING_URI. mlflow is a core dependency, so this never skips."""

from __future__ import annotations

import shutil

import pytest
from mlflow.tracking import MlflowClient

from clikit import run_cli
from oneml.study import expand, load_study
from serverkit import free_port, mlflow_server, served, tiny_study

GRID = {"main": {"grid": {"method.r": [4, 8]}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd, env = mlflow_server(folder, port)
    with served(cmd, f"http://127.0.0.1:{port}/health", folder / "server.log", env):
        yield f"http://127.0.0.1:{port}", folder


def _study(tmp_path):
    """The tiny study cut to 2 configurations x 2 seeds of 2 steps, saving its adapters (artifacts to proxy)."""
    return tiny_study(tmp_path, tracks=GRID, budget={"max_steps": 2}, save_steps=2, save_adapter=True)


def _children(uri: str, study: str) -> list:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, f"tags.`oneml.study` = '{study}'")
    return [r for r in runs if r.data.tags.get("oneml.study_parent") != "true"]


def test_a_study_records_to_the_server_and_reports_from_it(server, tmp_path, capsys, monkeypatch):
    uri, folder = server
    study = _study(tmp_path)
    root = tmp_path / "root"
    code, out, err = run_cli(capsys, "study", "run", str(study), "--tracking-uri", uri, "--quiet")
    assert code == 0, err
    trials = expand(load_study(study))
    children = _children(uri, "tiny")
    assert sorted(r.data.tags["oneml.run_id"] for r in children) == sorted(t.run_id for t in trials)
    assert all(r.info.status == "FINISHED" for r in children)
    assert not (root / "mlflow.db").exists()  # nothing went to the local default store
    for run in children:  # artifacts went through the server's proxy into its --artifacts-destination
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        stored = next((folder / "artifacts").rglob(f"{run.info.run_id}/artifacts"))
        assert (stored / "model" / "adapter_model.safetensors").is_file() and (stored / "config.yaml").is_file()

    code, out, err = run_cli(
        capsys, "report", "tiny", "--tracking-uri", uri, "--root", str(root), "--out", str(tmp_path / "a")
    )
    assert code == 0, err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    code, out, err = run_cli(capsys, "report", "tiny", "--root", str(root), "--out", str(tmp_path / "b"))
    assert code == 0, err
    runs_csv = (tmp_path / "a" / "runs.csv").read_text()
    assert runs_csv == (tmp_path / "b" / "runs.csv").read_text()
    assert all(r.info.run_id in runs_csv for r in children)  # every recorded run is in the report

    code, out, err = run_cli(capsys, "study", "run", str(study), "--quiet")  # resumed through the environment
    assert code == 0, err
    assert "steps trained this time: 0" in out
    assert len(_children(uri, "tiny")) == len(trials)  # nothing recorded twice
    code, out, err = run_cli(capsys, "runs", "--root", str(root))
    assert code == 0, err
    assert f"{len(trials) + 1} run(s) in {uri}" in out
    code, out, err = run_cli(capsys, "recommend", "tiny", "--root", str(root))
    assert code == 0 and "tiny" in out, err
    code, out, err = run_cli(capsys, "ui")  # the server's own UI, not a local `mlflow ui` on its URI
    assert code == 0 and f"open {uri}" in out, err


def test_a_run_trained_elsewhere_is_evaluated_from_the_server(server, tmp_path, capsys):
    """A run whose folder is gone (trained in a pod) is fetched from the server's artifacts, evaluated, and its
    scores land on its record on the server."""
    uri, _ = server
    root = tmp_path / "root"
    config = ["model.name=tiny-llama", "method.r=4", "data.max_samples=32", "data.eval_size=8", "data.max_length=64"]
    config += ["train.max_steps=2", "train.batch_size=4", "train.eval_before=false", f"tracking.root={root}"]
    config += ["tracking.experiment=elsewhere"]
    args = [a for item in config for a in ("--set", item)]
    code, out, err = run_cli(capsys, "train", *args, "--tracking-uri", uri, "--quiet")
    assert code == 0, err
    (run_dir,) = (root / "runs").iterdir()
    run_id = run_dir.name
    shutil.rmtree(run_dir)
    code, out, err = run_cli(capsys, "eval", run_id[:6], "-b", "perplexity", "--limit", "4", "--root", str(root),
                             "--tracking-uri", uri, "--quiet")  # fmt: skip
    assert code == 0, err
    assert (run_dir / "model" / "adapter_model.safetensors").is_file()  # fetched back from the server
    assert (run_dir / "eval" / "perplexity.json").is_file()
    client = MlflowClient(uri)
    (record,) = client.search_runs([client.get_experiment_by_name("elsewhere").experiment_id])
    assert any(key.startswith("bench/perplexity/") for key in record.data.metrics)


def test_an_unreachable_server_is_refused_before_anything_is_recorded(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    study = _study(tmp_path)
    train = ["train", "--set", "model.name=tiny-llama", "--set", f"tracking.root={tmp_path / 'root'}"]
    commands = [["study", "run", str(study)], train, ["report", "tiny"], ["runs"], ["export", "abc", "--out", "x"]]
    for argv in commands:
        code, _, err = run_cli(capsys, *argv, "--tracking-uri", dead)
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
        assert f"no MLflow server answers at {dead}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [study.name]  # no journal, run folder, database or export
