"""Early stopping's rule on made-up evaluations (no training): patience, min_delta, the metric's direction, NaN,
the final evaluation as a candidate, the weights it restores, and its state surviving a checkpoint round trip."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from oneml import load_run_config
from oneml.errors import OnemlError
from oneml.train.early_stopping import STATE_FILE, WEIGHTS_FILE, EarlyStopping


def _rule(patience=2, min_delta=0.0, metric="eval_loss"):
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)  # frozen: not the early stopping's to keep
    return EarlyStopping(SimpleNamespace(patience=patience, min_delta=min_delta, metric=metric), model), model


def _feed(rule, model, values, metric="eval_loss", every=10):
    """One evaluation per value at steps every, 2*every, ...; the weights are set to the step number before each,
    so that the restored weights say which step they come from. Returns the step it stopped at, or None."""
    for i, value in enumerate(values, start=1):
        with torch.no_grad():
            model.weight.fill_(i * every)
            model.bias.fill_(-1.0)
        if rule.observe(i * every, {metric: value, "eval_tokens": 5.0, "initial_eval_loss": 9.0}):
            return i * every
    return None


def test_patience_counts_evaluations_without_an_improvement():
    rule, model = _rule(patience=2)
    assert _feed(rule, model, [3.0, 2.0, 2.5, 2.1, 1.0]) == 40  # 2.5 and 2.1 do not beat 2.0
    assert rule.best_step == 20 and rule.best_value == 2.0 and rule.waited == 2
    assert rule.best_metrics == {"eval_loss": 2.0, "eval_tokens": 5.0}  # eval_* only


def test_an_improvement_resets_the_count():
    rule, model = _rule(patience=2)
    assert _feed(rule, model, [3.0, 3.1, 2.9, 3.0, 2.8, 2.85, 2.95]) == 70
    assert rule.best_step == 50


def test_min_delta_is_the_smallest_change_that_counts():
    rule, model = _rule(patience=2, min_delta=0.1)
    assert _feed(rule, model, [3.0, 2.95, 2.91]) == 30  # better, but by less than 0.1 each time
    assert rule.best_step == 10
    rule, model = _rule(patience=2, min_delta=0.1)
    assert _feed(rule, model, [3.0, 2.85, 2.7]) is None and rule.best_step == 30


def test_a_higher_is_better_metric_stops_when_it_stops_rising():
    rule, model = _rule(patience=1, metric="eval_token_accuracy")
    assert _feed(rule, model, [0.2, 0.3, 0.25], metric="eval_token_accuracy") == 30
    assert rule.best_step == 20 and rule.best_value == 0.3


def test_a_nan_evaluation_is_never_the_best_and_counts_against_patience():
    rule, model = _rule(patience=2)
    assert _feed(rule, model, [math.nan, 2.0, math.nan, math.nan]) == 40
    assert rule.best_step == 20


def test_the_final_evaluation_is_a_candidate_and_the_best_weights_come_back():
    rule, model = _rule(patience=3)
    _feed(rule, model, [3.0, 2.0, 2.5])  # steps 10, 20, 30; the model now holds step 30's weights
    with torch.no_grad():
        model.weight.fill_(35.0)
    assert rule.finish(35, {"eval_loss": 2.2}) is True  # not better than step 20: step 20's weights come back
    assert not rule.stopped and rule.best_step == 20
    assert torch.all(model.weight == 20.0) and torch.all(model.bias == -1.0)
    metrics, tags = rule.result(35, 35)
    assert metrics == {"best_step": 20.0, "stopped_early": 0.0}
    assert tags["oneml.stopped_early"] == "false" and tags["oneml.stop_reason"].startswith("max_steps: ran all 35")
    assert "at step 20, whose weights the run ends on" in tags["oneml.stop_reason"]

    rule, model = _rule(patience=3)
    _feed(rule, model, [3.0, 2.0])
    assert rule.finish(25, {"eval_loss": 1.0}) is False and rule.best_step == 25  # the last model is the best


def test_a_stopped_run_reports_patience_as_its_reason():
    rule, model = _rule(patience=1, min_delta=0.5)
    assert _feed(rule, model, [3.0, 2.9]) == 20
    assert rule.finish(20, rule.last_metrics) is True and torch.all(model.weight == 10.0)
    metrics, tags = rule.result(20, 100)
    assert metrics == {"best_step": 10.0, "stopped_early": 1.0} and tags["oneml.stopped_early"] == "true"
    assert tags["oneml.stop_reason"].startswith(
        "patience: eval_loss did not improve by more than 0.5 in 1 evaluation(s) after step 10; stopped at step 20 "
        "of 100"
    )


def test_the_state_survives_a_checkpoint(tmp_path):
    """What a checkpoint keeps: a rule loaded from it continues exactly as the one that wrote it."""
    rule, model = _rule(patience=3)
    _feed(rule, model, [3.0, 2.0, 2.5])
    rule.save(tmp_path)
    assert (tmp_path / STATE_FILE).is_file() and (tmp_path / WEIGHTS_FILE).is_file()
    again, other = _rule(patience=3)
    again.load(tmp_path)
    for r, m in ((rule, model), (again, other)):
        assert r.observe(40, {"eval_loss": 2.6}) is False
        assert r.observe(50, {"eval_loss": 2.7}) is True  # the third evaluation after step 20, in both
        r.restore()
        assert torch.all(m.weight == 20.0)
    assert again.best_metrics == rule.best_metrics and again.last_step == rule.last_step == 50


def test_a_checkpoint_without_the_state_is_refused_in_one_line(tmp_path):
    rule, _ = _rule()
    with pytest.raises(OnemlError, match="holds no early-stopping state"):
        rule.load(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.early_stopping={patience: 3}"], "train.early_stopping: needs train.eval_steps"),
        (["train.eval_steps=5", "train.early_stopping={patience: 0}"], "patience: must be a positive integer"),
        (["train.eval_steps=5", "train.early_stopping={patience: 2, min_delta: -1}"], "min_delta"),
        (["train.eval_steps=5", "train.early_stopping={patience: 2, metric: test_loss}"], "not a validation metric"),
        (
            ["train.eval_steps=5", "objective=dpo", "train.early_stopping={patience: 2, metric: eval_token_accuracy}"],
            "one of eval_loss, eval_preference_accuracy, eval_reward_margin",
        ),
        (["train.eval_steps=5", "train.early_stopping={patience: 2, mode: max}"], "unknown key"),
        (
            [
                "train.eval_steps=5",
                "train.early_stopping={patience: 2}",
                "distributed.launcher=torchrun",
                "distributed.nproc=2",
            ],
            "not supported over several processes",
        ),  # fmt: skip
    ],
)
def test_bad_early_stopping_settings_are_refused_in_one_line(overrides, message):
    with pytest.raises(OnemlError, match=message) as info:
        load_run_config(None, overrides)
    assert "\n" not in str(info.value)
