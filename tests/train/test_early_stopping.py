"""Early stopping end to end on a tiny model: the run stops where patience runs out, ends on the best step's
weights (its eval_* and test_* are that model's: equal to a run trained only to that step), reads the test rows
only after training, records why it stopped, and a run interrupted and resumed ends exactly where it would have.

min_delta 10 makes every evaluation after the first "no improvement" whatever the tiny model does, so the run
stops at step 6 (evaluations at 2, 4, 6; patience 2) with step 2 the best, on any machine.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from clikit import run_cli
from oneml import train
from oneml.tracking import resolve_tracking_uri
from splitkit import Timeline, spy_on_test_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from reliakit import overrides, records, tiny  # noqa: E402

# A constant learning rate, so that the first two steps are the same in a run of 8 steps and in one of 2.
COMMON = ("data.test_size=8", "train.lr_scheduler=constant", "train.save_adapter=false")
STOPPING = (*COMMON, "train.eval_steps=2", "train.early_stopping={patience: 2, min_delta: 10}", "train.save_steps=2")


def _trained(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """The uninterrupted run with early stopping, its timeline of test-row reads, and its weights at step 2."""
    root = tmp_path_factory.mktemp("stopped")
    monkeypatch, timeline = pytest.MonkeyPatch(), Timeline()

    class Weights(Timeline):
        at: dict[int, dict[str, torch.Tensor]] = {}

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.at[state.global_step] = _trained(model)

    weights = Weights()
    try:
        spy_on_test_rows(monkeypatch, timeline)
        result = train(tiny(root, *STOPPING), progress=False, callbacks=[timeline, weights])
    finally:
        monkeypatch.undo()
    return root, result, timeline, weights.at


def test_the_run_stops_when_patience_runs_out_and_ends_on_the_best_step(stopped):
    root, result, timeline, at = stopped
    m = result.metrics
    assert result.complete and m["steps"] == 6 and m["best_step"] == 2 and m["stopped_early"] == 1
    assert ("step", 7) not in timeline.events and ("train_end", 6) in timeline.events
    now = _trained(result.model)
    assert all(torch.equal(now[n], at[2][n]) for n in now)  # the step-2 weights, not the step-6 ones
    assert any(not torch.equal(at[6][n], at[2][n]) for n in now)  # (which differ)
    on_disk = json.loads((root / "runs" / result.run_id / "metrics.json").read_text())
    assert on_disk["best_step"] == 2 and on_disk["steps"] == 6 and on_disk["eval_loss"] == m["eval_loss"]


def test_the_test_rows_are_read_only_after_training(stopped):
    _, result, timeline, _ = stopped
    end = timeline.events.index(("train_end", 6))
    assert timeline.reads(timeline.events[:end]) == []  # the stopping evaluations at 2, 4, 6 read eval rows only
    assert timeline.reads() and "test_loss" in result.metrics


def test_its_eval_and_test_metrics_are_those_of_the_best_step(stopped, tmp_path):
    """A run trained to step 2 only holds the same weights: the same eval_* and test_* to rounding."""
    _, result, _, _ = stopped
    short = train(tiny(tmp_path, *COMMON, "train.max_steps=2"), progress=False).metrics
    for key in ("eval_loss", "eval_token_accuracy", "test_loss", "test_token_accuracy"):
        assert result.metrics[key] == pytest.approx(short[key], abs=1e-6), key


def test_mlflow_records_the_stop_and_the_best_step(stopped):
    root, result, _, _ = stopped
    (run,) = records(root, result.run_id)
    assert run.info.status == "FINISHED"
    tags, latest = run.data.tags, run.data.metrics
    assert tags["oneml.stopped_early"] == "true"
    assert tags["oneml.stop_reason"].startswith("patience: eval_loss did not improve by more than 10 in 2 evaluation")
    assert "stopped at step 6 of 8; best eval_loss" in tags["oneml.stop_reason"]
    assert latest["best_step"] == 2 and latest["steps"] == 6 and latest["eval_loss"] == result.metrics["eval_loss"]
    client = MlflowClient(resolve_tracking_uri(None, root))
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval_loss")]
    # before training, the three stopping evaluations, then the run's result at its last step: step 2's evaluation
    assert [s for s, _ in history] == [0, 2, 4, 6, 6]
    assert history[-1][1] == history[1][1] == result.metrics["eval_loss"] != history[-2][1]


def test_a_run_interrupted_and_resumed_stops_where_it_would_have(stopped, tmp_path):
    """SIGTERM at step 5 leaves checkpoint-4 (evaluations at 2 and 4 seen, step 2's weights the best); the rerun must
    stop at 6 with step 2's weights, as the uninterrupted run did. Without the state in the checkpoint it would
    take step 6 for the best and run on to 8."""
    from transformers import TrainerCallback

    from oneml.errors import Interrupted

    class TermAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                os.kill(os.getpid(), signal.SIGTERM)

    cfg = tiny(tmp_path, *STOPPING)
    with pytest.raises(Interrupted):
        train(cfg, progress=False, callbacks=[TermAt()])
    ckpt = tmp_path / "runs" / f".{cfg.run_id}.ckpt"
    assert (ckpt / "checkpoint-4" / "early_stopping.json").is_file()
    again = train(cfg, progress=False)
    assert again.steps_trained == 2
    expected = stopped[1].metrics
    for key in ("steps", "best_step", "stopped_early", "eval_loss", "test_loss", "initial_eval_loss"):
        assert again.metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    now, before = _trained(again.model), _trained(stopped[1].model)
    assert all(torch.allclose(now[n], before[n], atol=1e-6) for n in now)
    (run,) = records(tmp_path, cfg.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["oneml.stopped_early"] == "true"


def test_early_stopping_without_eval_steps_is_refused_and_records_nothing(tmp_path, capsys):
    args = [a for o in overrides(tmp_path, "train.early_stopping={patience: 2}") for a in ("--set", o)]
    code, _, err = run_cli(capsys, "train", "-q", *args)
    assert code == 2
    assert err.strip() == (
        "error: train.early_stopping: needs train.eval_steps (how often to evaluate on the validation rows), "
        "e.g. --set train.eval_steps=10"
    )
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
