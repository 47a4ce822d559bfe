"""Verdicts (better / worse / equivalent / inconclusive) on data with a known answer, and their calibration by
simulation: the chance of any false verdict when every configuration is truly equal, and the power that
`seeds_needed` promises. Simulations run the module's own verdict rule (`judge_arrays`) over many simulated
studies at once; a consistency test checks that `rank` gives the same verdicts one study at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from oneml.analysis.verdicts import (
    IDENTICAL,
    VERDICTS,
    Margin,
    difference,
    judge_arrays,
    parse_margin,
    rank,
    seeds_needed,
)
from oneml.errors import OnemlError

ALPHA = 0.05


def seeds(values) -> dict[str, float]:
    return {str(i): float(v) for i, v in enumerate(values)}


def mc_bound(p: float, reps: int) -> float:
    """p plus three binomial standard errors: what a rate at most p can reach by Monte Carlo chance."""
    return p + 3 * math.sqrt(p * (1 - p) / reps)


def simulate(x: np.ndarray, paired: bool, margin: float) -> np.ndarray:
    """Verdict codes of every configuration against the best (lower is better) for studies ``x`` (R, k, n).

    The same steps as `rank`: best = lowest mean; pairs = k(k-1)/2; paired t over shared seeds or Welch's t."""
    reps, k, n = x.shape
    means = x.mean(axis=2)
    best = means.argmin(axis=1)
    ref = x[np.arange(reps), best][:, None, :]  # (R, 1, n)
    if paired:
        d = x - ref
        diff, sd = d.mean(axis=2), d.std(axis=2, ddof=1)
        se, df = sd / math.sqrt(n), np.full(diff.shape, n - 1.0)
    else:
        va, vb = x.var(axis=2, ddof=1) / n, ref.var(axis=2, ddof=1) / n
        diff, se = means - ref.mean(axis=2), np.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (n - 1))
    pairs = k * (k - 1) // 2
    code = judge_arrays(diff, se, df, np.full(diff.shape, margin), ALPHA / pairs, higher_is_better=False)["code"]
    code[np.arange(reps), best] = -1  # the best is not compared with itself
    return code


@pytest.mark.parametrize("k", [2, 5, 10])
@pytest.mark.parametrize("n", [3, 6])
@pytest.mark.parametrize("paired", [True, False])
def test_no_false_difference_when_all_configurations_are_equal(k, n, paired):
    reps = 4000
    rng = np.random.default_rng(100 * k + n + paired)
    x = 1.4 + 0.01 * rng.standard_normal((reps, k, n))
    code = simulate(x, paired, margin=0.014)
    false = np.isin(code, [VERDICTS.index("worse"), VERDICTS.index("better")]).any(axis=1).mean()
    assert false <= mc_bound(ALPHA, reps), f"k={k} n={n}: {false:.3f} of studies call a difference"


def test_selection_is_what_breaks_testing_against_the_best_with_k_minus_1_tests():
    """Defect 6 at 5d4ffa7: against the best sample mean with Holm over k-1 tests, 10 equal configurations x 6
    seeds called one worse in 12.7% of studies. A family of k-1 comparisons misses that the best was selected."""
    reps, k, n = 4000, 10, 6
    x = 1.4 + 0.01 * np.random.default_rng(6).standard_normal((reps, k, n))
    ref = x[np.arange(reps), x.mean(axis=2).argmin(axis=1)][:, None, :]
    d = x - ref
    t = d.mean(axis=2) / (d.std(axis=2, ddof=1) / math.sqrt(n) + 1e-300)
    p = 2 * stats.t.sf(np.abs(t), n - 1)
    p[np.isnan(t) | (d.std(axis=2) == 0)] = 1.0
    holm_first = p.min(axis=1) * (k - 1)  # Holm rejects anything iff its first step does (the best's own p is 1)
    old = (holm_first < ALPHA).mean()
    assert old > mc_bound(ALPHA, reps), old  # the old procedure: over alpha
    ours = simulate(x, True, margin=0.014)
    assert (ours == VERDICTS.index("worse")).any(axis=1).mean() <= mc_bound(ALPHA, reps)


@pytest.mark.parametrize("k, paired", [(2, True), (2, False), (5, True)])
def test_seeds_needed_delivers_its_power(k, paired):
    """A true difference of 2 x delta at a given sd: at `seeds_needed` seeds, ~80% of studies reach a verdict."""
    delta, sd = 0.014, 0.02
    pairs = k * (k - 1) // 2
    spread = sd * math.sqrt(2)  # what the power is computed from: sd of paired differences, or of the difference
    n = seeds_needed(2 * delta, spread, delta, ALPHA / pairs, paired, current=2)
    assert n is not None and 4 <= n <= 60
    reps = 3000
    rng = np.random.default_rng(k * 7 + paired)
    x = 1.4 + sd * rng.standard_normal((reps, k, n))
    x[:, 1:, :] += 2 * delta  # one best, k - 1 worse by 2 delta
    code = simulate(x, paired, delta)
    decided = code[:, 1:] != VERDICTS.index("inconclusive")
    power = decided.mean()
    assert 0.70 <= power <= 0.90, f"power {power:.3f} at n={n}"


def test_rank_gives_the_simulated_verdicts():
    """The vectorised simulation and `rank` agree study by study (family size, selection, tests)."""
    rng = np.random.default_rng(3)
    for paired in (True, False):
        x = 1.4 + 0.01 * rng.standard_normal((40, 4, 5))
        x[:, 2] += 0.02
        code = simulate(x, paired, margin=0.014)
        for i in range(40):
            values = {f"c{j}": {str(s if paired else 10 * j + s): x[i, j, s] for s in range(5)} for j in range(4)}
            r = rank("eval_loss", False, values, Margin(0.014, False), ALPHA)
            got = [VERDICTS.index(r.verdict(f"c{j}")) if r.verdict(f"c{j}") != "best" else -1 for j in range(4)]
            assert got == list(code[i]), (paired, i)


def test_the_four_verdicts_on_known_differences():
    base = seeds([1.40, 1.41, 1.39, 1.405, 1.395, 1.40])
    worse = {s: v + 0.05 + 0.001 * int(s) for s, v in base.items()}  # 3.6% worse, tight: worse
    same = {s: v + 0.0002 * (-1) ** int(s) for s, v in base.items()}  # within 1%: equivalent
    wide = seeds([1.40, 1.45, 1.36, 1.44, 1.37, 1.41])  # noisy, same centre: inconclusive
    r = rank("eval_loss", False, {"base": base, "worse": worse, "same": same, "wide": wide}, parse_margin("1%"))
    twin = ({"base", "same"} - {r.best}).pop()  # the best is one of the two, the other equivalent to it
    assert {c.candidate: c.verdict for c in r.comparisons} == {
        "worse": "worse",
        twin: "equivalent",
        "wide": "inconclusive",
    }
    assert r.family == 6 and r.contenders == [r.best, twin] and r.undecided == ["wide"]
    wide_c = next(c for c in r.comparisons if c.candidate == "wide")
    assert wide_c.seeds_needed is not None and wide_c.seeds_needed > 6
    higher = rank("acc", True, {"a": seeds([0.6, 0.61, 0.59]), "b": seeds([0.5, 0.51, 0.49])}, Margin(0.01, False))
    assert higher.best == "a" and higher.comparisons[0].verdict == "worse"


def test_different_but_equivalent_says_both():
    a = seeds(1.4 + 0.0001 * np.arange(8))
    b = {s: v + 0.003 for s, v in a.items()}  # a constant shift: no paired spread, Welch on both
    b = {s: v + 0.0002 * (int(s) % 3) for s, v in b.items()}
    r = rank("eval_loss", False, {"a": a, "b": b}, parse_margin("1%"))
    c = r.comparisons[0]
    assert c.verdict == "equivalent" and "real difference, but inside the margin" in c.note and c.ci_low > 0


def test_pairing_uses_every_run():
    """Defect 4 at 5d4ffa7: with 2 shared seeds of 6 each, only the 2 pairs were tested (p=0.30) where Welch on all
    12 runs gives p=0.0008. Now a partial overlap is an unpaired test on every run, and it says so."""
    rng = np.random.default_rng(4)
    a = {str(s): 1.40 + 0.01 * rng.standard_normal() for s in range(6)}
    b = {str(s): 1.43 + 0.01 * rng.standard_normal() for s in range(4, 10)}  # seeds 4, 5 shared
    d = difference(b, a)
    assert d.test == "Welch t" and (d.n_candidate, d.n_reference) == (6, 6)
    assert "2 shared of 6 and 6" in d.note and d.effect_kind == "d_s"
    r = rank("eval_loss", False, {"a": a, "b": b}, parse_margin("1%"))
    assert r.comparisons[0].verdict == "worse" and r.comparisons[0].p < 0.01


def test_no_p_value_from_zero_variance():
    """Defect 5 at 5d4ffa7: a constant difference gave p=0, d=inf, "distinguishable" (e.g. steps logged every 10)."""
    constant_a, constant_b = seeds([50, 50, 50]), seeds([60, 60, 60])
    d = difference(constant_b, constant_a)
    assert not d.tested and d.note == IDENTICAL and math.isnan(d.effect)
    r = rank("steps", False, {"a": constant_a, "b": constant_b}, Margin(1, False))
    c = r.comparisons[0]
    assert c.verdict == "inconclusive" and math.isnan(c.p) and c.seeds_needed is None
    shifted = {s: v + 0.01 for s, v in seeds([1.40, 1.42, 1.39]).items()}
    d = difference(shifted, seeds([1.40, 1.42, 1.39]))  # varying configurations, constant paired difference
    assert d.test == "Welch t" and "same difference on every seed" in d.note and math.isfinite(d.effect)


def test_nan_never_wins():
    """Defect 10 at 5d4ffa7: a NaN quality result could be crowned best, depending on order."""
    for order in (("nan", "ok"), ("ok", "nan")):
        values = {"nan": seeds([math.nan, math.nan]), "ok": seeds([1.5, 1.51])}
        r = rank("eval_loss", False, {k: values[k] for k in order}, parse_margin("1%"))
        assert r.best == "ok" and r.comparisons == []
    partial = rank(
        "eval_loss", False, {"a": seeds([1.2, math.nan, 1.21]), "b": seeds([1.5, 1.51])}, Margin(0.01, False)
    )
    assert partial.best == "a" and partial.comparisons[0].d.n_candidate == 2  # the NaN seed is not a result


def test_single_runs_are_inconclusive_with_the_replicated_spread():
    values = {"one": seeds([1.40]), "rep": seeds([1.45, 1.46, 1.44])}
    r = rank("eval_loss", False, values, parse_margin("1%"))
    c = r.comparisons[0]
    assert c.verdict == "inconclusive" and not c.tested and "n=1" in c.note
    assert c.seeds_needed is not None and "spread of the replicated configurations" in c.note
    alone = rank("eval_loss", False, {"a": seeds([1.4]), "b": seeds([1.5])}, parse_margin("1%"))
    assert alone.comparisons[0].seeds_needed is None and alone.untested_best


def test_parse_margin():
    assert parse_margin("1%") == Margin(0.01, True) and parse_margin("2.5 %") == Margin(0.025, True)
    assert parse_margin(0.02) == Margin(0.02, False) and parse_margin("0.02") == Margin(0.02, False)
    assert parse_margin({"relative": 0.01}) == Margin(0.01, True)
    assert parse_margin({"absolute": 3}) == Margin(3, False)
    assert Margin(0.01, True).resolve(-2.0) == pytest.approx(0.02) and str(Margin(0.01, True)) == "1%"
    for bad in ("0%", "-1", "abc", "150%", {"rel": 1}, 0):
        with pytest.raises(OnemlError, match="margin"):
            parse_margin(bad)
