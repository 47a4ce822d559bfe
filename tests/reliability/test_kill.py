"""kill -9, SIGTERM and Ctrl-C at several moments of `oneml train`, each followed by the same command again.

What must hold: the rerun continues from the last complete checkpoint (never a half-written one), finished runs
are untouched, one run id keeps one MLflow record that ends FINISHED, nothing is left behind, and the final
metrics equal an uninterrupted run's (CPU, fp32, same seed) within 1e-5.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from reliakit import cli, finish, metrics, records, tiny

from oneml import train

RESUMABLE = ("train.save_steps=2",)
COMPARED = ("eval_loss", "eval_token_accuracy", "initial_eval_loss")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's metrics."""
    root = tmp_path_factory.mktemp("reference")
    cfg = tiny(root, *RESUMABLE)
    return cfg.run_id, train(cfg, progress=False).metrics


def _same_result(root, reference):
    run_id, expected = reference
    got = metrics(root, run_id)
    for key in COMPARED:
        assert got[key] == pytest.approx(expected[key], abs=1e-5), key
    assert got["steps"] == 8


def _history(root, run, key="train_loss") -> list[int]:
    from mlflow.tracking import MlflowClient

    from oneml.tracking import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(None, root))
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def _clean(root, run_id):
    """Only the published run and the store remain: no checkpoints, staging or partial folders."""
    assert [p.name for p in (root / "runs").iterdir()] == [run_id]
    (run,) = records(root, run_id)
    assert run.info.status == "FINISHED" and "oneml.failure" not in run.data.tags
    return run


def test_kill_during_a_checkpoint_write_resumes_from_the_previous_checkpoint(tmp_path, reference):
    run_id = reference[0]
    ckpt = tmp_path / "runs" / f".{run_id}.ckpt"
    code, _, err = finish(cli(tmp_path, *RESUMABLE, fault="checkpoint:2"))  # dies writing checkpoint-4
    assert code == -signal.SIGKILL, err[-2000:]
    assert (ckpt / "checkpoint-2").is_dir() and not (ckpt / "checkpoint-4").exists()
    assert (ckpt / ".partial-4" / "checkpoint-4").is_dir()  # the half-published save, never taken for a checkpoint

    result = train(tiny(tmp_path, *RESUMABLE), progress=False)  # the rerun (in process: the slow test uses the CLI)
    assert result.steps_trained == 6  # from checkpoint-2
    _same_result(tmp_path, reference)
    run = _clean(tmp_path, run_id)
    assert _history(tmp_path, run) == [1, 2, 3, 3, 4, 4, 5, 6, 7, 8]  # steps 3-4 logged by both attempts


@pytest.mark.slow
def test_a_run_killed_without_checkpoints_is_recorded_killed_by_its_rerun(tmp_path):
    """Without train.save_steps a rerun starts over, in a new record; the dead attempt's record, which kill -9 left
    RUNNING, is closed as KILLED (its process is gone), and its staging folder removed."""
    cfg = tiny(tmp_path, "train.max_steps=4")
    code, _, err = finish(cli(tmp_path, "train.max_steps=4", fault="step:3"))
    assert code == -signal.SIGKILL, err[-2000:]
    assert [r.info.status for r in records(tmp_path, cfg.run_id)] == ["RUNNING"]
    assert [p.name.split("-")[0] for p in (tmp_path / "runs").iterdir()] == [f".{cfg.run_id}.tmp"]

    train(cfg, progress=False)
    dead, rerun = records(tmp_path, cfg.run_id)
    assert dead.info.status == "KILLED" and "process died" in dead.data.tags["oneml.failure"]
    assert rerun.info.status == "FINISHED"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [cfg.run_id]


def _wait_for(path, proc, timeout=240.0):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:] if proc.stderr else ""
        time.sleep(0.02)


def test_sigterm_mid_run_records_killed_keeps_the_checkpoint_and_the_rerun_resumes(tmp_path, reference):
    """In process (fast): the signal arrives at step 5, as from `kill` or a scheduler's preemption."""
    from transformers import TrainerCallback

    from oneml.errors import Interrupted

    class TermAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                os.kill(os.getpid(), signal.SIGTERM)

    cfg = tiny(tmp_path, *RESUMABLE)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="interrupted by SIGTERM") as info:
        train(cfg, progress=False, callbacks=[TermAt()])
    assert info.value.exit_code == 143 and signal.getsignal(signal.SIGTERM) is previous  # handler restored
    (run,) = records(tmp_path, cfg.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["oneml.failure"] == "Interrupted: interrupted by SIGTERM at step 5; rerun to resume"
    ckpt = tmp_path / "runs" / f".{cfg.run_id}.ckpt"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [ckpt.name]  # staging removed, checkpoints kept
    assert sorted(p.name for p in ckpt.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    result = train(cfg, progress=False)
    assert result.steps_trained == 4
    _same_result(tmp_path, reference)
    _clean(tmp_path, cfg.run_id)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_terminated_run_is_recorded_killed_and_the_rerun_resumes(tmp_path, reference, signum):
    run_id = reference[0]
    ckpt = tmp_path / "runs" / f".{run_id}.ckpt"
    proc = cli(tmp_path, *RESUMABLE)
    _wait_for(ckpt / "checkpoint-4", proc)
    proc.send_signal(signum)
    code, _, err = finish(proc)
    assert code == 128 + signum, err[-2000:]
    assert err.strip().splitlines()[-1] == ("interrupted by SIGTERM" if signum == signal.SIGTERM else "interrupted")
    (run,) = records(tmp_path, run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["oneml.failure"].endswith("; rerun to resume")
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [ckpt.name]  # staging removed, checkpoints kept
    assert (ckpt / "checkpoint-4").is_dir()

    code, _, err = finish(cli(tmp_path, *RESUMABLE))
    assert code == 0, err[-2000:]
    _same_result(tmp_path, reference)
    _clean(tmp_path, run_id)


@pytest.mark.slow
def test_kills_at_every_fault_point_in_a_row_lose_nothing(tmp_path, reference):
    """One root: a finished run, then the same run killed at each fault point in turn, rerun after each."""
    run_id = reference[0]
    ckpt = tmp_path / "runs" / f".{run_id}.ckpt"
    other = tiny(tmp_path, *RESUMABLE, "train.seed=1").run_id
    assert finish(cli(tmp_path, *RESUMABLE, "train.seed=1"))[0] == 0
    kept = (tmp_path / "runs" / other / "metrics.json").stat().st_mtime_ns

    def killed(fault: str) -> list[str]:
        code, _, err = finish(cli(tmp_path, *RESUMABLE, fault=fault))
        assert code == -signal.SIGKILL, (fault, err[-2000:])
        assert not (tmp_path / "runs" / run_id).exists()  # never published half-way
        return sorted(p.name for p in ckpt.glob("checkpoint-*"))

    assert killed("step:5") == ["checkpoint-2", "checkpoint-4"]  # mid-step 5
    assert killed("prepare:1") == ["checkpoint-2", "checkpoint-4"]  # the rerun dies preparing data: nothing lost
    assert killed("checkpoint:1") == ["checkpoint-2", "checkpoint-4"]  # resumed at 4, died writing checkpoint-6
    assert killed("mlflow:1") == ["checkpoint-6", "checkpoint-8"]  # trained to the end, died recording it
    (run,) = records(tmp_path, run_id)
    assert run.info.status == "RUNNING"  # a kill -9 cannot record anything; the rerun continues this record

    code, _, err = finish(cli(tmp_path, *RESUMABLE))
    assert code == 0, err[-2000:]
    _same_result(tmp_path, reference)
    assert (tmp_path / "runs" / other / "metrics.json").stat().st_mtime_ns == kept
    assert [r.info.status for r in records(tmp_path, other)] == ["FINISHED"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted([run_id, other])
    (run,) = records(tmp_path, run_id)
    assert run.info.status == "FINISHED" and "oneml.failure" not in run.data.tags


NOISY = (*RESUMABLE, "train.max_steps=6", "method.dropout=0.1")  # dropout draws from the RNG on every step


@pytest.fixture(scope="module")
def noisy_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("noisy")
    cfg = tiny(root, *NOISY)
    return cfg.run_id, train(cfg, progress=False).metrics


@pytest.mark.parametrize(
    "fault",
    [
        "eval:1",  # the evaluation before training recorded, no checkpoint yet (#17: the rerun ended elsewhere)
        "step:1",  # mid-step 1, before the first checkpoint
        pytest.param("prepare:1", marks=pytest.mark.slow),
        pytest.param("step:3", marks=pytest.mark.slow),  # after checkpoint-2
        pytest.param("checkpoint:1", marks=pytest.mark.slow),
        pytest.param("mlflow:1", marks=pytest.mark.slow),
    ],
)
def test_a_kill_at_any_recorded_moment_reruns_to_the_uninterrupted_result(tmp_path, noisy_reference, fault):
    """With dropout, the same command after a kill must give the same numbers whatever the moment of the kill."""
    run_id, expected = noisy_reference
    code, _, err = finish(cli(tmp_path, *NOISY, fault=fault))
    assert code == -signal.SIGKILL, err[-2000:]
    code, _, err = finish(cli(tmp_path, *NOISY))
    assert code == 0, err[-2000:]
    got = metrics(tmp_path, run_id)
    for key in COMPARED:
        assert got[key] == pytest.approx(expected[key], abs=1e-6), (fault, key)
