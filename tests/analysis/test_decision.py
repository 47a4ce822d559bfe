"""Decision rules on crafted results whose right answer is known by construction."""

from __future__ import annotations

import pytest
from synthetic import make_config, normal

from oneml.analysis.decision import (
    DEFAULT_WEIGHTS,
    METHOD_COMPLEXITY,
    PRIORITIES,
    DecisionOptions,
    analyse,
    decision_table,
    parse_weights,
    recommend,
    scores,
)
from oneml.errors import OnemlError

SEEDS = 6


def shifted(base: dict[str, float], shift: float, jitter: tuple[float, ...] = (0.0,) * SEEDS) -> dict[str, float]:
    return {k: v + shift + j for (k, v), j in zip(base.items(), jitter, strict=True)}


BASE = normal(1.40, 0.01, SEEDS, seed=1)
NOISE = (0.004, -0.003, 0.005, -0.004, 0.002, -0.003)  # mean +0.00017: not distinguishable from BASE
WIDE = (0.02, -0.02, 0.025, -0.018, 0.015, -0.021)  # the same centre, larger spread


def per_seed(value: float, spread: float = 0.0) -> dict[str, float]:
    return {str(i): value + spread * (i % 2) for i in range(SEEDS)}


def crafted():
    """dora best (stable); lora and loraplus not distinguishable from it (lora cheaper, loraplus wider);
    full clearly worse but fastest to converge and most memory-hungry."""
    return [
        make_config("dora", "dora", BASE, peak_memory_mib=per_seed(1400), steps_to_threshold=per_seed(50)),
        make_config(
            "lora",
            "lora",
            shifted(BASE, 0.0005, NOISE),
            peak_memory_mib=per_seed(1200),
            steps_to_threshold=per_seed(60),
        ),
        make_config(
            "loraplus",
            "loraplus",
            shifted(BASE, 0.0, WIDE),
            peak_memory_mib=per_seed(1250),
            steps_to_threshold=per_seed(55),
        ),
        make_config(
            "full", "full", shifted(BASE, 0.2), peak_memory_mib=per_seed(4000), steps_to_threshold=per_seed(30, 2)
        ),
    ]


def test_clear_winner_is_recommended_with_a_significant_test():
    configs = [make_config("good", "lora", BASE), make_config("bad", "lora", shifted(BASE, 0.1, NOISE))]
    a = analyse(configs, DecisionOptions())
    r = recommend(a, "performance")
    assert r.choice == "good" and a.comparisons[0].p_holm < 0.05
    assert r.evidence.startswith("vs runner-up: distinguishable") and "Holm p" in r.evidence
    assert a.contenders == ["good"]


def test_identical_methods_are_reported_indistinguishable():
    a = analyse([make_config("x", "lora", BASE), make_config("y", "lora", dict(BASE))], DecisionOptions())
    r = recommend(a, "performance")
    assert "not distinguishable" in r.evidence and "identical" in r.evidence
    assert set(a.contenders) == {"x", "y"}


def test_contenders_and_every_rule_on_crafted_results():
    a = analyse(crafted(), DecisionOptions())
    assert a.best in ("dora", "lora", "loraplus") and set(a.contenders) == {"dora", "lora", "loraplus"}
    table = {r.priority: r for r in decision_table(a)}
    assert list(table) == PRIORITIES.names()
    assert table["stability"].choice in ("dora", "lora")  # never loraplus (wide) nor full (worse)
    assert table["simplicity"].choice == "lora"  # simplest among contenders; full is simple-ish but worse
    assert table["convergence"].choice == "full" and "significantly worse" in table["convergence"].evidence
    assert table["memory"].choice == "lora"
    assert table["preference"].choice is None and "no preference runs" in table["preference"].evidence
    assert table["start"].choice in a.contenders


def test_stability_prefers_lowest_cv_among_contenders_only():
    steady = make_config("steady-but-worse", "lora", {k: 1.6 for k in BASE})  # CV 0, clearly worse
    a = analyse([make_config("wide", "lora", shifted(BASE, 0, WIDE)), make_config("tight", "dora", BASE), steady],
                DecisionOptions())  # fmt: skip
    assert recommend(a, "stability").choice == "tight"


def test_convergence_falls_back_to_train_loss_area():
    configs = [
        make_config("slow", "lora", BASE, train_loss_auc=per_seed(2.0)),
        make_config("fast", "lora", dict(BASE), train_loss_auc=per_seed(1.7, 0.01)),
    ]
    r = recommend(analyse(configs, DecisionOptions()), "convergence")
    assert r.choice == "fast" and "mean train loss" in r.numbers


def test_memory_respects_the_quality_tolerance():
    configs = [
        make_config("best", "lora", BASE, peak_memory_mib=per_seed(2000)),
        make_config("cheap-bad", "lora", shifted(BASE, 0.07), peak_memory_mib=per_seed(500)),  # 5% worse
        make_config("cheap-ok", "lora", shifted(BASE, 0.014), peak_memory_mib=per_seed(900)),  # 1% worse
    ]
    assert recommend(analyse(configs, DecisionOptions()), "memory").choice == "cheap-ok"
    assert recommend(analyse(configs, DecisionOptions(tolerance=0.1)), "memory").choice == "cheap-bad"


def test_preference_picks_the_best_accuracy():
    configs = [
        make_config("dpo-a", "lora", BASE, eval_preference_accuracy=per_seed(0.6, 0.01)),
        make_config("dpo-b", "lora", dict(BASE), eval_preference_accuracy=per_seed(0.7, 0.01)),
    ]
    r = recommend(analyse(configs, DecisionOptions()), "preference")
    assert r.choice == "dpo-b" and "preference accuracy" in r.numbers


def test_weights_steer_the_starting_point():
    configs = crafted()
    default = recommend(analyse(configs, DecisionOptions()), "start")
    frugal = recommend(analyse(configs, DecisionOptions(weights=parse_weights("quality=0,memory=10"))), "start")
    assert frugal.choice == "lora" and "memory=10" in frugal.evidence
    assert default.choice in ("dora", "lora", "loraplus")
    parts = scores(analyse(configs, DecisionOptions()))
    assert all(0.0 <= v <= 1.0 for per in parts.values() for v in per.values())


def test_other_quality_metric_and_direction():
    configs = [
        make_config("a", "lora", BASE, eval_token_accuracy=per_seed(0.50, 0.01)),
        make_config("b", "lora", dict(BASE), eval_token_accuracy=per_seed(0.60, 0.01)),
    ]
    a = analyse(configs, DecisionOptions(metric="eval_token_accuracy"))
    assert a.best == "b"
    with pytest.raises(OnemlError, match="bench/gsm8k"):
        analyse(configs, DecisionOptions(metric="bench/gsm8k"))


def test_single_seed_everywhere_falls_back_to_means():
    configs = [make_config("a", "lora", {"0": 1.40}), make_config("b", "dora", {"0": 1.405})]
    a = analyse(configs, DecisionOptions())
    assert a.best == "a" and set(a.contenders) == {"a", "b"}  # within the 2% tolerance, untested
    table = {r.priority: r for r in decision_table(a)}
    assert "not tested" in table["performance"].evidence and "n=1" in table["performance"].evidence
    assert table["stability"].choice is None and "two or more seeds" in table["stability"].evidence


def test_parse_weights(tmp_path):
    assert parse_weights(None) == DEFAULT_WEIGHTS
    assert parse_weights("quality=2, memory=0.5")["memory"] == 0.5
    path = tmp_path / "w.yaml"
    path.write_text("stability: 4\n")
    assert parse_weights(str(path))["stability"] == 4.0
    for bad, message in (("qualty=2", "unknown criterion 'qualty'"), ("memory=-1", ">= 0"), ("memory", "expected")):
        with pytest.raises(OnemlError, match=message):
            parse_weights(bad)


def test_complexity_table_ranks_every_registered_method():
    from oneml.methods import METHODS  # the registry imports torch: fine in a test, never in analysis

    assert set(METHODS.names()) <= set(METHOD_COMPLEXITY)
    ranks = [rank for rank, _ in METHOD_COMPLEXITY.values()]
    assert ranks == sorted(ranks) == list(range(1, len(ranks) + 1))
