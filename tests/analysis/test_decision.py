"""Decision rules on crafted results whose right answer is known by construction, and the defects of the guide
at 5d4ffa7 (each test here fails there: it named winners its numbers did not support)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from synthetic import make_config, normal

from oneml.analysis.decision import (
    DEFAULT_WEIGHTS,
    LEGACY_COMPLEXITY,
    PRIORITIES,
    DecisionOptions,
    analyse,
    decision_table,
    parse_weights,
    recommend,
)
from oneml.analysis.results import RunData
from oneml.analysis.rules import scores
from oneml.errors import OnemlError

SEEDS = 6


def shifted(base: dict[str, float], shift: float, jitter: tuple[float, ...] = (0.0,) * SEEDS) -> dict[str, float]:
    return {k: v + shift + j for (k, v), j in zip(base.items(), jitter, strict=True)}


BASE = normal(1.40, 0.01, SEEDS, seed=1)
NOISE = (0.0004, -0.0003, 0.0005, -0.0004, 0.0002, -0.0003)  # tiny paired noise: equivalent to BASE
WIDE = (0.02, -0.02, 0.025, -0.018, 0.015, -0.021)  # the same centre, larger paired spread


def per_seed(value: float, spread: float = 0.0, n: int = SEEDS) -> dict[str, float]:
    return {str(i): value + spread * (i % 2) for i in range(n)}


def table(configs, **options) -> dict:
    return {r.priority: r for r in decision_table(analyse(configs, DecisionOptions(**options)))}


def failed_run(label: str, seed: str, method: str = "lora") -> RunData:
    return RunData(f"{label}-f{seed}", f"{label}-f{seed}", "FAILED", label, method, "m", "sft", "d", seed, "t", {},
                   {"oneml.failure": "TrainingDiverged: loss is NaN"}, {}, {})  # fmt: skip


def crafted():
    """dora best; lora equivalent to it (cheaper); loraplus undecided (wide); full clearly worse but fastest."""
    return [
        make_config("dora", "dora", BASE, peak_memory_mib=per_seed(1400), train_wall_seconds=per_seed(60)),
        make_config(
            "lora",
            "lora",
            shifted(BASE, 0.0005, NOISE),
            peak_memory_mib=per_seed(1200),
            train_wall_seconds=per_seed(50),
        ),  # fmt: skip
        make_config(
            "loraplus",
            "loraplus",
            shifted(BASE, 0.0, WIDE),
            peak_memory_mib=per_seed(1250),
            train_wall_seconds=per_seed(50),
        ),  # fmt: skip
        make_config(
            "full", "full", shifted(BASE, 0.2), peak_memory_mib=per_seed(4000), train_wall_seconds=per_seed(90)
        ),
    ]


def test_clear_winner_is_decided():
    configs = [make_config("good", "lora", BASE), make_config("bad", "lora", shifted(BASE, 0.1, NOISE))]
    a = analyse(configs, DecisionOptions())
    r = recommend(a, "performance")
    assert r.decided and r.winner == "good" and a.comparisons[0].verdict == "worse"
    assert "bad: worse" in r.evidence and "paired t" in r.evidence and a.contenders == ["good"]


def test_identical_methods_are_equivalent_not_a_winner_by_accident():
    a = analyse([make_config("x", "lora", BASE), make_config("y", "dora", shifted(BASE, 0, NOISE))], DecisionOptions())
    assert a.comparisons[0].verdict == "equivalent" and set(a.contenders) == {"x", "y"}
    assert recommend(a, "simplicity").winner == "x"  # as good, and simpler


def test_an_undecided_configuration_blocks_every_row_that_rests_on_as_good():
    rows = table(crafted())
    assert rows["performance"].verdict == "inconclusive" and rows["performance"].winner is None
    assert set(rows["performance"].candidates) == {"dora", "loraplus"}
    for name in ("simplicity", "memory", "start"):
        r = rows[name]
        assert r.verdict == "inconclusive" and "loraplus" in r.candidates and r.seeds_needed is not None, name
        assert "no winner at n=6" in r.evidence and "seeds per configuration would decide it" in r.evidence
    # dora and lora spread alike: no number of seeds tells their spreads apart, and the row says so
    assert rows["stability"].verdict == "inconclusive" and rows["stability"].seeds_needed is None
    assert "would separate them at the observed spread" in rows["stability"].evidence
    assert rows["simplicity"].choice == "lora" and rows["memory"].choice == "lora"
    assert rows["preference"].verdict == "none" and "no preference runs" in rows["preference"].evidence
    cost = rows["performance"].cost_seconds
    needed = rows["performance"].seeds_needed
    assert cost == pytest.approx((needed - 6) * 60 + (needed - 6) * 50)  # dora 60 s and loraplus 50 s per run


def test_without_the_undecided_one_the_rows_are_decided():
    rows = table([c for c in crafted() if c.label != "loraplus"])
    assert all(rows[p].decided for p in ("performance", "simplicity", "memory", "start"))
    assert rows["simplicity"].winner == "lora" and rows["memory"].winner == "lora"
    assert rows["performance"].winner == "dora"


def test_not_distinguishable_is_not_as_good():
    """Defect 7 at 5d4ffa7: a LoRA truly 4% worse won "Minimal engineering" with probability 0.81 at n=2, because
    "not distinguishable" counted as "as good". Now it may only win when shown equivalent: never at n=2."""
    rng = np.random.default_rng(7)
    wins = 0
    for _ in range(200):
        dora = {str(s): 1.40 + 0.03 * rng.standard_normal() for s in range(2)}
        lora = {str(s): 1.40 * 1.04 + 0.03 * rng.standard_normal() for s in range(2)}
        r = recommend(analyse([make_config("dora", "dora", dora), make_config("lora", "lora", lora)],
                              DecisionOptions()), "simplicity")  # fmt: skip
        wins += r.winner == "lora"
    assert wins / 200 <= 0.05


def test_more_seeds_settle_a_difference_that_does_not_matter():
    """The other half of defect 7: more seeds made the old guide *stricter* about a 0.1% difference. With a
    margin, a tiny real difference becomes "equivalent" and the simpler method wins."""
    rng = np.random.default_rng(8)
    dora = {str(s): 1.40 + 0.002 * rng.standard_normal() for s in range(20)}
    lora = {s: v + 0.0014 + 0.0005 * rng.standard_normal() for s, v in dora.items()}
    a = analyse([make_config("dora", "dora", dora), make_config("lora", "lora", lora)], DecisionOptions())
    c = a.comparison("lora")
    assert c.verdict == "equivalent" and "inside the margin" in c.note
    assert recommend(a, "simplicity").winner == "lora"


def test_stability_counts_diverged_runs():
    """Defect 1 at 5d4ffa7: failed runs were dropped before the rule, so a configuration that diverged in 2 of 8
    seeds won "Production stability"."""
    steady = make_config("steady", "dora", normal(1.40, 0.004, 8, seed=2))
    flaky = make_config("flaky", "lora", {k: v for k, v in list(normal(1.40, 0.001, 8, seed=3).items())[:6]})
    flaky.failed = [failed_run("flaky", "6"), failed_run("flaky", "7")]
    a = analyse([steady, flaky], DecisionOptions(margin="2%"))
    assert set(a.contenders) == {"steady", "flaky"}
    r = recommend(a, "stability")
    assert r.choice == "steady" and "2 of 8 runs failed" in r.evidence
    assert a.failures("flaky") == (2, 8) and a.failures("steady") == (0, 8)


def test_nan_results_count_as_failures_and_never_win():
    nan_best = make_config("nan", "lora", {"0": math.nan, "1": math.nan, "2": 1.0})
    ok = make_config("ok", "lora", per_seed(1.5, 0.01, 3))
    a = analyse([nan_best, ok], DecisionOptions())
    assert a.failures("nan") == (2, 3) and a.n("nan") == 1 and a.summaries["nan"]["eval_loss"].mean == 1.0


def test_no_spread_test_below_five_seeds_and_no_tiny_p_values():
    """Defect 3 at 5d4ffa7: Brown-Forsythe at n=2 printed p=<0.0001 for equal spreads."""
    a_vals, b_vals = {"0": 1.40, "1": 1.4001}, {"0": 1.41, "1": 1.39}
    rows = table([make_config("a", "lora", a_vals), make_config("b", "dora", b_vals)], margin="5%")
    r = rows["stability"]
    assert "<0.0001" not in r.evidence and "Brown-Forsythe" not in r.evidence
    assert r.verdict == "inconclusive" and "fewer than 5 seeds" in r.evidence and r.seeds_needed >= 5


def test_identical_seeds_are_flagged_not_crowned():
    same = make_config("same", "lora", per_seed(1.40))
    varied = make_config("varied", "dora", shifted(BASE, 0.0))
    r = recommend(analyse([same, varied], DecisionOptions(margin="5%")), "stability")
    assert r.choice != "same" or not r.decided
    assert "seed not applied, or a metric too coarse to differ" in r.evidence


def test_convergence_never_says_worse_about_an_untested_configuration():
    """Defect 2 at 5d4ffa7: "significantly worse than the best" about a configuration with one run."""
    fast = with_losses(make_config("fast", "full", {"0": 1.5}), 1.2)
    best = with_losses(make_config("best", "lora", per_seed(1.40, 0.01)), 1.7)
    r = recommend(analyse([fast, best], DecisionOptions()), "convergence")
    assert r.choice == "fast" and "mean train loss" in r.numbers
    assert "significantly worse" not in r.evidence and "worse than the best" not in r.evidence
    assert "undecided against the best" in r.evidence or r.verdict == "inconclusive"


def with_losses(config, level: float, every: int = 2):
    """Give each run a train_loss history: window means logged every ``every`` steps, decaying to ``level``."""
    for i, run in enumerate(config.runs):
        run.histories["train_loss"] = [
            (s, level + 0.5 * math.exp(-s / 10) + 0.001 * i) for s in range(every, 41, every)
        ]
    return config


def test_convergence_area_is_on_a_common_grid():
    """Defect 9 at 5d4ffa7: logging every 2 vs every 3 steps changed the mean train loss of equal training."""
    per_step = [2.0 * math.exp(-s / 12) + 1.0 for s in range(1, 61)]

    def logged(every: int) -> list[tuple[int, float]]:
        return [(s, float(np.mean(per_step[s - every : s]))) for s in range(every, 61, every)]

    a = make_config("two", "lora", per_seed(1.40, 0.01))
    b = make_config("three", "dora", {k: v + 1e-5 for k, v in per_seed(1.40, 0.01).items()})
    for run in a.runs:
        run.histories["train_loss"] = logged(2)
    for run in b.runs:
        run.histories["train_loss"] = logged(3)
    from oneml.analysis.rules import loss_areas

    areas = loss_areas(analyse([a, b], DecisionOptions()))
    assert areas["two"]["0"] == pytest.approx(areas["three"]["0"], abs=1e-12)


def test_convergence_time_to_event_counts_runs_that_never_reached():
    """Defect 8 at 5d4ffa7: a configuration that reached the threshold in 1 of 6 seeds scored best."""
    rare = make_config("rare", "lora", per_seed(1.40, 0.01), steps_to_threshold={"0": 10.0})
    usual = make_config("usual", "dora", per_seed(1.40, 0.01), steps_to_threshold=per_seed(40, 2))
    for c in (rare, usual):
        for run in c.runs:
            run.params |= {"train.loss_threshold": "1.5", "train.max_steps": "100"}
            run.metrics["steps"] = 100.0
    a = analyse([rare, usual], DecisionOptions())
    r = recommend(a, "convergence")
    assert r.choice == "usual" and "6 of 6 reached" in r.numbers and "1 of 6 reached" in r.evidence
    parts = scores(a, ["rare", "usual"])
    assert parts["usual"]["convergence"] == 1.0 > parts["rare"]["convergence"]


def test_performance_row_tests_every_configuration_not_only_the_runner_up():
    """Defect 11 at 5d4ffa7: only the runner-up was tested while several configurations were contenders."""
    configs = [make_config("a", "lora", BASE), make_config("b", "lora", shifted(BASE, 0.0002, NOISE)),
               make_config("c", "lora", shifted(BASE, 0.0, WIDE))]  # fmt: skip
    r = recommend(analyse(configs, DecisionOptions()), "performance")
    others = {"a", "b", "c"} - {r.choice}
    assert all(f"{label}: " in r.evidence for label in others)
    assert r.verdict == "inconclusive" and "c" in r.candidates


def test_start_scores_do_not_stretch_noise():
    """Defect 15 at 5d4ffa7: min-max rescaling made a 0.0001 loss gap and a 1 MiB gap each span 0..1."""
    a_ = make_config("a", "lora", BASE, peak_memory_mib=per_seed(1000), tokens_per_second=per_seed(5000))
    b_ = make_config("b", "dora", shifted(BASE, 0.0001, NOISE), peak_memory_mib=per_seed(1001),
                     tokens_per_second=per_seed(4999))  # fmt: skip
    parts = scores(analyse([a_, b_], DecisionOptions()))
    assert set(parts) == {"a", "b"}
    for criterion in ("quality", "memory", "speed"):
        assert abs(parts["a"][criterion] - parts["b"][criterion]) < 0.002, criterion
    assert all(0.0 <= v <= 1.0 for per in parts.values() for v in per.values())


def test_weights_steer_the_starting_point():
    configs = [c for c in crafted() if c.label != "loraplus"]
    frugal = recommend(analyse(configs, DecisionOptions(weights=parse_weights("quality=0,memory=10"))), "start")
    assert frugal.winner == "lora" and "memory=10" in frugal.evidence


def test_other_quality_metric_and_direction():
    configs = [
        make_config("a", "lora", BASE, eval_token_accuracy=per_seed(0.50, 0.01)),
        make_config("b", "lora", dict(BASE), eval_token_accuracy=per_seed(0.60, 0.01)),
    ]
    a = analyse(configs, DecisionOptions(metric="eval_token_accuracy"))
    assert a.best == "b" and a.comparison("a").verdict == "worse"
    with pytest.raises(OnemlError, match="bench/gsm8k"):
        analyse(configs, DecisionOptions(metric="bench/gsm8k"))


def test_single_seed_everywhere_makes_no_claim():
    configs = [make_config("a", "lora", {"0": 1.40}), make_config("b", "dora", {"0": 1.405})]
    a = analyse(configs, DecisionOptions())
    rows = {r.priority: r for r in decision_table(a)}
    assert a.contenders == ["a"] and a.undecided == ["b"]
    for name in ("performance", "simplicity", "memory", "start"):
        assert not rows[name].decided, name
    assert "spread across seeds is unknown" in rows["performance"].evidence


def test_margin_option_and_study_margin():
    configs = [make_config("a", "lora", BASE), make_config("b", "dora", shifted(BASE, 0.01, NOISE))]  # +0.7%
    assert analyse(configs, DecisionOptions()).comparison("b").verdict == "equivalent"  # 1% default
    assert analyse(configs, DecisionOptions(margin="0.5%")).comparison("b").verdict == "worse"
    assert analyse(configs, DecisionOptions(margin=0.02)).comparison("b").verdict == "equivalent"


def test_the_study_margin_is_used_unless_the_option_says_otherwise():
    from oneml.analysis.decision import MARGIN_TAG, analyse_study
    from oneml.analysis.results import StudyResults

    configs = [make_config("a", "lora", BASE), make_config("b", "dora", shifted(BASE, 0.01, NOISE))]  # +0.7%
    study = StudyResults("s", "study", "sqlite:///x.db", configs, [], parent_tags={MARGIN_TAG: "0.5%"})
    [a] = analyse_study(study, DecisionOptions())
    assert str(a.margin) == "0.5%" and a.comparison("b").verdict == "worse"
    [b] = analyse_study(study, DecisionOptions(margin="1%"))
    assert b.comparison("b").verdict == "equivalent"


def test_parse_weights(tmp_path):
    assert parse_weights(None) == DEFAULT_WEIGHTS
    assert parse_weights("quality=2, memory=0.5")["memory"] == 0.5
    path = tmp_path / "w.yaml"
    path.write_text("stability: 4\n")
    assert parse_weights(str(path))["stability"] == 4.0
    for bad, message in (("qualty=2", "unknown criterion 'qualty'"), ("memory=-1", ">= 0"), ("memory", "expected")):
        with pytest.raises(OnemlError, match=message):
            parse_weights(bad)


def test_every_method_declares_its_complexity_and_runs_carry_it():
    """#17: a new method is one file: it declares its own simplicity rank there (no list in analysis/ to edit)."""
    from oneml.analysis.decision import complexity_of
    from oneml.methods import METHODS  # the registry imports torch: fine in a test, never in analysis
    from oneml.tracking import tags

    declared = {name: cls.__dict__.get("complexity") for name, cls in ((e.name, e.value) for e in METHODS.entries())}
    assert all(value is not None for value in declared.values()), [n for n, v in declared.items() if v is None]
    ranks = [rank for rank, _ in declared.values()]
    assert len(set(ranks)) == len(ranks)  # a strict order: ties would make "simplest" arbitrary
    for name, value in declared.items():  # the frozen table for old runs agrees with the files
        assert LEGACY_COMPLEXITY.get(name, value) == value, name
    tagged = make_config("x", "brand-new", BASE)
    tagged.runs[0].tags |= {tags.COMPLEXITY: "2.5", tags.COMPLEXITY_WHY: "new"}
    assert complexity_of(tagged) == (2.5, "new")
    assert complexity_of(make_config("y", "unknown-method", BASE))[0] == math.inf
    assert list(PRIORITIES.names()) == ["performance", "stability", "simplicity", "convergence", "memory",
                                        "preference", "start"]  # fmt: skip


def test_the_guide_compares_on_test_rows_when_runs_have_them():
    from oneml.analysis.report import build_report
    from oneml.analysis.results import StudyResults

    test = {k: v + 0.05 for k, v in BASE.items()}
    a_ = make_config("a", "lora", BASE, test_loss=test)
    b_ = make_config("b", "dora", shifted(BASE, 0.1, NOISE), test_loss={k: v - 0.2 for k, v in test.items()})
    a = analyse([a_, b_], DecisionOptions())
    assert a.options.metric == "test_loss" and a.best == "b"  # eval says a, the test rows say b
    assert analyse([a_, b_], DecisionOptions(metric="eval_loss")).best == "a"
    report = build_report(StudyResults("s", "study", "sqlite:///x.db", [a_, b_], []), DecisionOptions(), figures=False)
    assert any("compared on the test rows (test_loss)" in w for w in report.warnings)
    pair = [make_config("a", "lora", BASE), make_config("b", "dora", BASE)]
    halved = StudyResults("h", "study", "sqlite:///x.db", pair, [], parent_tags={"oneml.halving.metric": "eval_loss"})
    warnings = build_report(halved, DecisionOptions(), figures=False).warnings
    assert any("selection and comparison on the same rows" in w for w in warnings)


def test_speed_is_not_ranked_across_concurrent_and_solo_runs():
    """Trials run two at a time share the GPU and the cores: their tokens/s is not a solo run's. Mixed, the speed
    criterion drops out of the scores and the report says why; all solo (or all concurrent), it counts."""
    from oneml.analysis.report import build_report
    from oneml.analysis.results import StudyResults
    from oneml.tracking import tags

    def pair():
        fast = make_config("a", "lora", BASE, tokens_per_second=per_seed(9000))
        slow = make_config("b", "dora", BASE, tokens_per_second=per_seed(3000))
        return fast, slow

    a_, b_ = pair()
    assert scores(analyse([a_, b_], DecisionOptions()))["b"]["speed"] == pytest.approx(1 / 3)
    for run in b_.runs:  # b's runs shared the machine with another trial
        run.tags[tags.CONCURRENT_TRIALS] = "2"
    parts = scores(analyse([a_, b_], DecisionOptions()))
    assert all("speed" not in per for per in parts.values())
    report = build_report(StudyResults("s", "study", "sqlite:///x.db", [a_, b_], []), DecisionOptions(), figures=False)
    assert any(w.startswith("speed not ranked: runs trained 1 / 2 trials at once") for w in report.warnings)
    a_, b_ = pair()
    for run in a_.runs + b_.runs:
        run.tags[tags.CONCURRENT_TRIALS] = "2"
    assert "speed" in scores(analyse([a_, b_], DecisionOptions()))["a"]


def test_the_cost_of_more_seeds_counts_the_evaluations_too():
    # a seed costs its training loop and its evaluations (before, after, test): on the case study's CPU runs those
    # were a third of a run, and leaving them out promised "~23 min more" for ~32 min of work
    timed = {"train_wall_seconds": per_seed(30.0), "eval_seconds": per_seed(5.0), "test_seconds": per_seed(4.0)}
    timed["initial_eval_seconds"] = per_seed(6.0)
    a = analyse([make_config("a", "lora", per_seed(1.0, 0.01), **timed)], DecisionOptions())
    assert a.seconds_per_run("a") == 45.0
    bare = analyse([make_config("a", "lora", per_seed(1.0, 0.01), train_seconds=per_seed(20.0))], DecisionOptions())
    assert bare.seconds_per_run("a") == 20.0
