"""Configurations that differ in an objective setting that defines the loss (ORPO's lambda weights its odds-ratio
term, DPO's beta scales its margin) are not compared on that loss: the same model scores a different loss under
each. The guide compares them on an accuracy the setting does not change, says so, and leaves convergence (a
training-loss row) out. Found in the case study: "lambda 0.1 beats 1.0 by 33% on test loss" was the lambda."""

from __future__ import annotations

import pytest
from synthetic import make_config, normal

from oneml.analysis.decision import DecisionOptions, analyse, loss_defined_by, metric_note, recommend

SEEDS = 4


def orpo(label: str, lam: str, loss: float, accuracy: float, seed: int):
    c = make_config(
        label,
        "lora",
        normal(loss, 0.01, SEEDS, seed),
        test_loss=normal(loss, 0.01, SEEDS, seed + 1),
        test_preference_accuracy=normal(accuracy, 0.01, SEEDS, seed + 2),
        eval_preference_accuracy=normal(accuracy, 0.01, SEEDS, seed + 3),
    )
    for r in c.runs:
        r.params.update({"objective.name": "orpo", "objective.lambda": lam})
        r.histories["train_loss"] = [(step, loss + 1.0 / step) for step in range(1, 11)]
    return c


def test_a_loss_setting_that_differs_moves_the_comparison_to_an_accuracy():
    # lambda 1.0's loss is far higher only because lambda weights a positive term; its accuracy is the better one
    configs = [orpo("lambda=0.1", "0.1", 2.1, 0.60, 1), orpo("lambda=1.0", "1.0", 2.8, 0.75, 11)]
    a = analyse(configs, DecisionOptions())
    assert loss_defined_by(configs) == ["objective.lambda"]
    assert a.options.metric == "test_preference_accuracy" and a.best == "lambda=1.0"
    assert recommend(a, "performance").winner == "lambda=1.0"
    convergence = recommend(a, "convergence")
    assert convergence.verdict == "none" and "defined by objective.lambda" in convergence.evidence
    note = metric_note(a)
    assert note is not None and note.startswith("sft: compared on test preference accuracy, not on the loss")


def test_the_same_settings_keep_the_loss_and_an_explicit_loss_metric_is_warned_about():
    same = [orpo("a", "0.1", 2.1, 0.60, 1), orpo("b", "0.1", 2.3, 0.75, 11)]
    a = analyse(same, DecisionOptions())
    assert a.options.metric == "test_loss" and metric_note(a) is None and a.best == "a"
    differ = [orpo("lambda=0.1", "0.1", 2.1, 0.60, 1), orpo("lambda=1.0", "1.0", 2.8, 0.75, 11)]
    asked = analyse(differ, DecisionOptions(metric="test_loss"))
    assert asked.options.metric == "test_loss"
    assert "yet the guide compares their test loss" in (metric_note(asked) or "")


@pytest.mark.parametrize("recorded, expected", [("eval_token_accuracy", "eval_token_accuracy"), (None, "test_loss")])
def test_without_a_preference_accuracy_the_next_loss_free_metric_or_the_loss(recorded, expected):
    configs = []
    for i, lam in enumerate(("0.1", "1.0")):
        extra = {recorded: normal(0.5, 0.01, SEEDS, i)} if recorded else {}
        c = make_config(f"c{i}", "lora", normal(2.0, 0.01, SEEDS, i), test_loss=normal(2.0, 0.01, SEEDS, i), **extra)
        for r in c.runs:
            r.params["objective.lambda"] = lam
        configs.append(c)
    assert analyse(configs, DecisionOptions()).options.metric == expected
