"""Statistics against known answers: scipy's own functions, hand computations, synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from synthetic import normal

from oneml.analysis.stats import (
    SINGLE_RUN,
    WILCOXON_MIN_PAIRS,
    against_best,
    compare,
    holm,
    summarize,
    t_interval,
)


def test_summary_matches_scipy():
    x = [1.21, 1.25, 1.19, 1.30, 1.24]
    s = summarize(x)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert s.n == 5 and s.mean == pytest.approx(np.mean(x))
    assert s.std == pytest.approx(np.std(x, ddof=1))
    assert s.cv == pytest.approx(np.std(x, ddof=1) / np.mean(x))
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high))
    assert s.interval == "t" and not s.warning


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    x = list(normal(2.0, 0.1, 12, seed=3).values())
    a, b = summarize(x, interval="bootstrap", seed=7), summarize(x, interval="bootstrap", seed=7)
    assert a.interval == "bootstrap" and (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a.ci_low < a.mean < a.ci_high
    t = summarize(x)  # for normal data the two intervals roughly agree
    assert a.ci_high - a.ci_low == pytest.approx(t.ci_high - t.ci_low, rel=0.5)


def test_single_run_warns_and_is_never_tested():
    s = summarize([1.5])
    assert s.n == 1 and s.warning == SINGLE_RUN and math.isnan(s.std) and s.ci_low == s.ci_high == 1.5
    c = compare("eval_loss", "a", {"0": 1.4}, "b", {"0": 1.5, "1": 1.6})
    assert not c.tested and c.note == SINGLE_RUN and math.isnan(c.p) and not c.distinguishable(0.05)


def test_clearly_better_method_is_distinguishable():
    better, worse = normal(1.20, 0.01, 6, seed=1), normal(1.40, 0.01, 6, seed=2)
    c = compare("eval_loss", "better", better, "worse", worse)
    a, b = np.array(list(better.values())), np.array(list(worse.values()))
    d = a - b
    assert c.test == "paired t" and c.n == 6
    assert c.p == pytest.approx(stats.ttest_rel(a, b).pvalue) and c.p < 1e-4
    assert c.diff == pytest.approx(d.mean()) and c.ci_low < -0.2 < c.ci_high
    assert c.cohen_d == pytest.approx(d.mean() / d.std(ddof=1))
    assert c.wilcoxon_p == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert c.distinguishable(0.05)


def test_identical_methods_are_not_distinguishable():
    x = normal(1.3, 0.02, 6, seed=5)
    same = compare("eval_loss", "a", x, "b", dict(x))
    assert same.p == 1.0 and same.cohen_d == 0.0 and same.diff == 0.0 and not same.distinguishable(0.05)
    assert "identical" in same.note
    # Two independent samples from one distribution (seeds chosen once; the answer is fixed).
    draw = compare("eval_loss", "a", normal(1.3, 0.02, 6, seed=11), "b", normal(1.3, 0.02, 6, seed=12))
    assert draw.tested and draw.p > 0.05 and not draw.distinguishable(0.05)


def test_constant_shift_is_distinguishable_without_nan():
    b = {"0": 1.0, "1": 1.1, "2": 1.2}
    c = compare("eval_loss", "a", {k: v + 0.05 for k, v in b.items()}, "b", b)
    assert c.p == 0.0 and c.cohen_d == math.inf and c.distinguishable(0.05)


def test_holm_matches_hand_computation():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.02, float("nan"), 0.04])  # untested entries are not part of the family
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_wilcoxon_only_from_six_pairs():
    a, b = normal(1.0, 0.05, 6, seed=1), normal(1.1, 0.05, 6, seed=2)
    five = {k: a[k] for k in list(a)[:5]}
    assert math.isnan(compare("m", "a", five, "b", b).wilcoxon_p)
    assert not math.isnan(compare("m", "a", a, "b", b).wilcoxon_p)
    assert 2 / 2 ** (WILCOXON_MIN_PAIRS - 1) > 0.05 > 2 / 2**WILCOXON_MIN_PAIRS  # the reason for the threshold


def test_welch_without_shared_seeds():
    a = {"0": 1.0, "1": 1.02, "2": 0.99}
    b = {"5": 1.2, "6": 1.22, "7": 1.18}
    c = compare("m", "a", a, "b", b)
    assert c.test == "Welch t" and "unpaired" in c.note
    assert c.p == pytest.approx(stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False).pvalue)
    assert c.ci_low < c.diff < c.ci_high < 0


def test_against_best_is_one_holm_family():
    best = normal(1.00, 0.01, 6, seed=1)
    deltas = [0.01, -0.005, 0.008, -0.004, 0.006, -0.003]  # mean +0.002, sd 0.0068: t ~ 0.7
    values = {
        "best": best,
        "close": {k: v + d for (k, v), d in zip(best.items(), deltas, strict=True)},
        "bad": normal(1.10, 0.01, 6, seed=3),
    }
    best, comparisons = against_best("eval_loss", False, values)
    assert best == "best" and [c.candidate for c in comparisons] == ["close", "bad"]
    assert [c.p_holm for c in comparisons] == pytest.approx(holm([c.p for c in comparisons]))
    assert not comparisons[0].distinguishable(0.05) and comparisons[1].distinguishable(0.05)
    best_acc, _ = against_best("acc", True, {"x": {"0": 0.5, "1": 0.6}, "y": {"0": 0.7, "1": 0.8}})
    assert best_acc == "y"


def test_t_interval_needs_two_points():
    assert all(math.isnan(v) for v in t_interval(1.0, 0.1, 1))
