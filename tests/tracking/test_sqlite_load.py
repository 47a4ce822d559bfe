"""The default SQLite store under load: a study's trials in 3 worker processes write to one mlflow.db at once
(the driver too: the parent run, the journal), and every record arrives exactly once, whole, with no
"database is locked" failure."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from oneml.study import expand, load_study
from oneml.study.executors import ExecutorOptions
from oneml.study.run import run_study
from oneml.tracking import resolve_tracking_uri
from serverkit import record_one, tiny_study


def _load(tmp_path, grid: dict[str, list], seeds: list[int]) -> None:
    tracks = {"main": {"grid": grid}}
    spec = load_study(tiny_study(tmp_path, tracks=tracks, seeds=seeds, budget={"max_steps": 2}, save_steps=2))
    trials = expand(spec)
    result = run_study(spec, "local", ExecutorOptions(workers=3), progress=False)
    assert list(result.states.values()) == ["finished"] * len(trials), result.states

    client = MlflowClient(resolve_tracking_uri(None, tmp_path / "root"))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("oneml.study_parent") == "true"]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["oneml.run_id"] for r in children) == sorted(t.run_id for t in trials)  # once each
    assert {r.info.status for r in children} == {"FINISHED"}
    assert not [r.data.tags["oneml.failure"] for r in children if "oneml.failure" in r.data.tags]
    params = {len(r.data.params) for r in children}
    assert len(params) == 1  # every run has all its params: no batch lost
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert sorted(m.step for m in history) == [1, 2], run.data.tags["oneml.run_id"]  # every step, once
        assert "eval_loss" in run.data.metrics and "tokens_per_second" in run.data.metrics


def test_three_workers_share_the_sqlite_store(tmp_path):
    _load(tmp_path, {"method.r": [4, 8, 16]}, seeds=[0])  # 3 processes starting, training and ending together


@pytest.mark.slow
def test_24_trials_on_three_workers(tmp_path):
    """8 waves of 3 processes (took 1724 s on 2 shared cores at load 16-20: worker start-up dominates)."""
    _load(tmp_path, {"method.r": [4, 8, 16], "train.learning_rate": [1.0e-3, 1.0e-2]}, seeds=[0, 1, 2, 3])


def test_processes_opening_a_fresh_store_at_once(tmp_path):
    """Runs started together on a new root (a shell loop with '&', an array job) each create the SQLite tables
    and the experiment: one must do it, the others must wait for it and use the result."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    n = 4
    barrier, errors = context.Barrier(n), context.Queue()
    uri = resolve_tracking_uri(None, tmp_path)
    procs = [context.Process(target=record_one, args=(uri, str(tmp_path), i, barrier, errors)) for i in range(n)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=600)
    failures = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert not failures, failures
    assert [p.exitcode for p in procs] == [0] * n
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "oneml"]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["oneml.run_id"] for r in runs) == [f"r{i}" for i in range(n)]
    assert {r.info.status for r in runs} == {"FINISHED"}
