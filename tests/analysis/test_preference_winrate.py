"""The preference row of the guide reads a judge's length-controlled win rate (`oneml eval -b winrate`) when runs
recorded one, ahead of the preference accuracy of DPO/ORPO runs."""

from __future__ import annotations

from synthetic import make_config, normal

from oneml.analysis.decision import DecisionOptions, analyse, recommend
from oneml.analysis.rules import preference_metric, scores

SEEDS = 6
LOSS = normal(1.40, 0.01, SEEDS, seed=1)
BASE = "bench/winrate/base/lc_win_rate"


def rates(centre: float, seed: int) -> dict[str, float]:
    return normal(centre, 0.01, SEEDS, seed=seed)


def test_the_judged_win_rate_decides_the_preference_row():
    configs = [
        make_config("dora", "dora", LOSS, **{BASE: rates(0.70, 2), "eval_preference_accuracy": rates(0.9, 3)}),
        make_config("lora", "lora", LOSS, **{BASE: rates(0.55, 4), "eval_preference_accuracy": rates(0.95, 5)}),
    ]
    a = analyse(configs, DecisionOptions())
    assert preference_metric(a) == BASE  # ahead of eval_preference_accuracy, which would pick lora
    r = recommend(a, "preference")
    assert r.decided and r.winner == "dora"
    assert "winrate LC win rate vs base" in r.numbers and "lora: worse" in r.evidence
    assert scores(a, ["dora", "lora"])["lora"]["preference"] < 1.0 == scores(a, ["dora", "lora"])["dora"]["preference"]


def test_the_opponent_most_configurations_were_judged_against_is_used():
    ref = "bench/winrate/reference/lc_win_rate"
    configs = [
        make_config("a", "lora", LOSS, **{BASE: rates(0.6, 1), ref: rates(0.3, 2)}),
        make_config("b", "dora", LOSS, **{ref: rates(0.4, 3)}),
    ]
    a = analyse(configs, DecisionOptions())
    assert preference_metric(a) == ref
    assert recommend(a, "preference").winner == "b"


def test_without_judged_rates_the_preference_accuracy_is_used_and_without_either_none():
    with_acc = [make_config("a", "lora", LOSS, eval_preference_accuracy=rates(0.8, 1))]
    assert preference_metric(analyse(with_acc, DecisionOptions())) == "eval_preference_accuracy"
    plain = analyse([make_config("a", "lora", LOSS)], DecisionOptions())
    r = recommend(plain, "preference")
    assert preference_metric(plain) is None and r.verdict == "none" and "no preference runs" in r.evidence


def test_with_a_test_split_the_preference_row_reads_the_test_rows():
    # the validation rows are the ones the study selected on (tuning, the stage pick): they would pick b, the
    # rows nothing selected on pick a, and only those may decide
    configs = [
        make_config("a", "lora", LOSS, eval_preference_accuracy=rates(0.6, 1), test_preference_accuracy=rates(0.9, 2)),
        make_config("b", "dora", LOSS, eval_preference_accuracy=rates(0.9, 3), test_preference_accuracy=rates(0.6, 4)),
    ]
    a = analyse(configs, DecisionOptions())
    r = recommend(a, "preference")
    assert preference_metric(a) == "test_preference_accuracy"
    assert r.decided and r.winner == "a" and "test preference accuracy" in r.numbers
    assert scores(a, ["a", "b"])["b"]["preference"] < 1.0 == scores(a, ["a", "b"])["a"]["preference"]
