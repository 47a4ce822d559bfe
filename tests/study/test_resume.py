"""Resuming: a run killed mid-way continues from its checkpoint to the uninterrupted result; a study whose
driver is killed resumes without repeating finished runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from studykit import write_study

from oneml.study import expand, load_study
from oneml.study.run import run_study
from oneml.study.state import state
from oneml.tracking import resolve_tracking_uri

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from transformers import TrainerCallback
    from oneml import load_run_config, train

    class KillAt(TrainerCallback):  # dies like a crash: no cleanup, no exception handler
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)

    cfg = load_run_config(None, [
        "model.name=tiny-llama", "method.r=4", "method.alpha=8", "data.max_samples=32", "data.eval_size=8",
        "data.max_length=96", "train.max_steps=8", "train.batch_size=4", "train.save_steps=2",
        "train.learning_rate=0.01", "train.logging_steps=1", "train.save_adapter=false", "tracking.root=" + sys.argv[1],
    ])
    kill = [KillAt()] if int(sys.argv[2]) else []
    result = train(cfg, progress=False, callbacks=kill)
    print(cfg.run_id, result.steps_trained)
    """
)


def _train(tmp_path: Path, root: Path, kill_at: int) -> subprocess.CompletedProcess:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), str(root), str(kill_at)], capture_output=True, text=True)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    plain = _train(tmp_path, tmp_path / "plain", 0)
    assert plain.returncode == 0, plain.stderr[-2000:]
    run_id = plain.stdout.split()[0]

    killed = _train(tmp_path, tmp_path / "resumed", 5)
    assert killed.returncode == -signal.SIGKILL
    ckpt = tmp_path / "resumed" / "runs" / f".{run_id}.ckpt"
    assert (ckpt / "checkpoint-4").is_dir() and not (tmp_path / "resumed" / "runs" / run_id).exists()

    resumed = _train(tmp_path, tmp_path / "resumed", 0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.split() == [run_id, "4"]  # steps 5..8 only
    expected = json.loads((tmp_path / "plain" / "runs" / run_id / "metrics.json").read_text())
    got = json.loads((tmp_path / "resumed" / "runs" / run_id / "metrics.json").read_text())
    assert got["eval_loss"] == pytest.approx(expected["eval_loss"], abs=1e-5)
    assert got["initial_eval_loss"] == pytest.approx(expected["initial_eval_loss"], abs=1e-6)
    assert got["steps"] == 8 and not ckpt.exists()

    client = MlflowClient(resolve_tracking_uri(None, tmp_path / "resumed"))
    runs = client.search_runs(["1"], f"tags.`oneml.run_id` = '{run_id}'")
    assert [r.info.status for r in runs] == ["FINISHED"]  # the resumed run continued its own record


@pytest.mark.slow
def test_killed_driver_resumes_without_repeating_finished_runs(tmp_path):
    path = write_study(tmp_path)
    spec = load_study(path)
    trials = expand(spec)
    runs = tmp_path / "root" / "runs"
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "oneml", "study", "run", str(path), "--quiet"]
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and sum((runs / t.run_id).is_dir() for t in trials) < 3:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done = {
        t.run_id: (runs / t.run_id / "metrics.json").stat().st_mtime_ns for t in trials if (runs / t.run_id).is_dir()
    }
    assert 3 <= len(done) < len(trials)

    result = run_study(spec, progress=False)
    assert set(result.states.values()) == {"finished"}
    for run_id, mtime in done.items():
        assert (runs / run_id / "metrics.json").stat().st_mtime_ns == mtime  # not run again
    assert result.steps_trained <= (len(trials) - len(done)) * 4

    reference = load_study(write_study(tmp_path / "ref"))
    run_study(reference, progress=False)
    for t in trials:
        got = json.loads((runs / t.run_id / "metrics.json").read_text())["eval_loss"]
        ref = json.loads((tmp_path / "ref" / "root" / "runs" / t.run_id / "metrics.json").read_text())["eval_loss"]
        assert got == pytest.approx(ref, abs=1e-5), t.label
        # state(), not the journal's status field: a driver killed between a run's metrics.json and its journal
        # line leaves the line without a status, and the run is finished all the same (its metrics are published)
        assert state(t) == "finished"


def test_plain_runs_do_not_checkpoint():
    from oneml.config import TrainConfig

    assert TrainConfig().save_steps is None


STEPS = 120


@pytest.mark.slow
@pytest.mark.parametrize("executor", [["--workers", "1"], ["--workers", "2"], ["--executor", "ray"]])
def test_sigterm_to_the_driver_stops_its_trials_and_a_rerun_finishes_them(tmp_path, executor):
    """A scheduler's SIGTERM reaches only the driver: it stops the trials in flight (in-process, its worker
    processes, or its Ray tasks), which are recorded KILLED with their checkpoints kept, and exits 143 leaving no
    process behind."""
    changes = dict(tracks={"main": {"grid": {"train.learning_rate": [1.0e-3, 1.0e-2]}}}, seeds=[0])
    changes |= dict(budget={"max_steps": STEPS}, save_steps=2)
    path = write_study(tmp_path, **changes)
    spec = load_study(path)
    trials = expand(spec)
    runs = tmp_path / "root" / "runs"
    cmd = [sys.executable, "-m", "oneml", "study", "run", str(path), "--quiet", *executor]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.glob(".*.ckpt/checkpoint-*")):
        time.sleep(0.05)
    assert driver.poll() is None, "the study ended before a trial was checkpointed"
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=200) == 128 + signal.SIGTERM, driver.stderr.read()[-2000:]
    with pytest.raises(ProcessLookupError):  # no trial process outlives the driver
        os.killpg(driver.pid, 0)
    client = MlflowClient(resolve_tracking_uri(None, tmp_path / "root"))
    records = client.search_runs(["1"])
    parent = [r for r in records if r.data.tags.get("oneml.study_parent") == "true"]
    assert [(r.info.status, r.data.tags["oneml.study.interrupted"]) for r in parent] == [
        ("KILLED", "interrupted by SIGTERM")
    ]
    statuses = [r.info.status for r in records if r not in parent]
    assert "KILLED" in statuses and "RUNNING" not in statuses
    assert not all((runs / t.run_id).is_dir() for t in trials)

    result = run_study(spec, progress=False)
    assert set(result.states.values()) == {"finished"}
    (parent,) = [r for r in client.search_runs(["1"]) if r.data.tags.get("oneml.study_parent") == "true"]
    assert parent.info.status == "FINISHED" and "oneml.study.interrupted" not in parent.data.tags
    assert result.steps_trained < len(trials) * STEPS  # the interrupted runs resumed from their checkpoints
    reference = load_study(write_study(tmp_path / "ref", **changes))
    run_study(reference, progress=False)
    for t in trials:
        got = json.loads((runs / t.run_id / "metrics.json").read_text())["eval_loss"]
        ref = json.loads((tmp_path / "ref" / "root" / "runs" / t.run_id / "metrics.json").read_text())["eval_loss"]
        assert got == pytest.approx(ref, abs=1e-5), t.label
