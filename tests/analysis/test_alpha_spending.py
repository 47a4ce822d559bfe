"""Group-sequential looks: the spending function, the level a report judges at, and the calibration of the whole
procedure by simulation. With every configuration truly equal, studies that add seeds to their undecided
configurations look after every round; the chance of any false better/worse over all looks stays <= alpha with
O'Brien-Fleming spending, and exceeds it when every look is judged at the full alpha (naive peeking).

The simulation runs the guide's own verdict rule (`judge_arrays`) over many studies at once, with the steps of
study/sequential.py: the best by mean at each look, paired t where two configurations have the same seeds (a
prefix of the same length) and Welch otherwise, Bonferroni over all k(k-1)/2 pairs, and the next round only for
the best and the configurations still inconclusive."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from synthetic import make_config

from oneml.analysis.decision import DecisionOptions, analyse_study
from oneml.analysis.results import StudyResults
from oneml.analysis.sequential import (
    ALPHA_TAG,
    EXTENDED_TAG,
    LOOKS_TAG,
    MAX_TAG,
    SPENDING_TAG,
    look_alpha,
    look_share,
    look_tags,
    obrien_fleming,
    remaining,
)
from oneml.analysis.verdicts import VERDICTS, judge_arrays

ALPHA = 0.05
WORSE, BETTER, INCONCLUSIVE = VERDICTS.index("worse"), VERDICTS.index("better"), VERDICTS.index("inconclusive")


def mc_bound(p: float, reps: int) -> float:
    return p + 3 * math.sqrt(p * (1 - p) / reps)


def test_obrien_fleming_spends_little_early_and_all_of_alpha_at_max():
    assert obrien_fleming(ALPHA, 0) == 0 and obrien_fleming(ALPHA, 1) == pytest.approx(ALPHA)
    assert obrien_fleming(ALPHA, 1.3) == pytest.approx(ALPHA)  # beyond max: nothing more to spend
    assert obrien_fleming(ALPHA, 0.3) == pytest.approx(0.00035, abs=2e-5)  # 3 of 10 seeds
    assert obrien_fleming(ALPHA, 0.5) == pytest.approx(0.00557, abs=2e-5)
    spent = [obrien_fleming(ALPHA, n / 10) for n in range(3, 11)]
    assert spent == sorted(spent)
    shares = [look_share(ALPHA, list(range(3, n + 1)), 10) for n in range(3, 11)]
    assert sum(shares) == pytest.approx(ALPHA)  # the looks' shares add up to alpha: the union bound
    assert look_share(ALPHA, [3, 10], 10) == pytest.approx(ALPHA - obrien_fleming(ALPHA, 0.3))
    assert remaining(ALPHA, [3, 5], 10) == pytest.approx(ALPHA - obrien_fleming(ALPHA, 0.5))


def test_look_alpha_reads_the_parent_tags_and_says_so():
    tags = look_tags([3, 4, 5], 10, ALPHA)
    assert tags == {MAX_TAG: "10", LOOKS_TAG: "3,4,5", SPENDING_TAG: "obrien-fleming", ALPHA_TAG: "0.05"}
    share, sentence = look_alpha(tags, ALPHA)
    assert share == pytest.approx(obrien_fleming(ALPHA, 0.5) - obrien_fleming(ALPHA, 0.4))
    assert sentence == (
        "group-sequential: look 3 of up to 8 (seeds 3..10), O'Brien-Fleming spending, this look's share of alpha 0.0036"
    )
    assert look_alpha({}, ALPHA) is None and look_alpha({LOOKS_TAG: "x", MAX_TAG: "10"}, ALPHA) is None
    share, sentence = look_alpha({EXTENDED_TAG: "2,3"}, ALPHA)
    assert share == ALPHA and "seeds 2, 3 were added by hand" in sentence and "not corrected" in sentence


def _study(tags: dict[str, str]) -> StudyResults:
    a = make_config("a", "lora", {str(s): 1.40 + 0.001 * s for s in range(5)})
    b = make_config("b", "lora", {str(s): 1.45 + 0.001 * s + 0.0004 * (s % 2) for s in range(5)})
    return StudyResults("s", "study", "sqlite://", [a, b], [], [], tags)


def test_analyse_study_judges_at_the_last_looks_share_unless_alpha_is_given():
    tags = look_tags([3, 4, 5], 10, ALPHA)
    (a,) = analyse_study(_study(tags), DecisionOptions())
    assert a.options.alpha == pytest.approx(look_alpha(tags, ALPHA)[0])
    (given,) = analyse_study(_study(tags), DecisionOptions(alpha=0.05))
    assert given.options.alpha == 0.05
    (plain,) = analyse_study(_study({}), DecisionOptions())
    assert plain.options.alpha == 0.05  # no looks: the default


def test_the_report_states_the_look():
    from oneml.analysis.report import build_report

    tags = look_tags([3, 4, 5], 10, ALPHA)
    sentence = look_alpha(tags, ALPHA)[1]
    assert sentence in build_report(_study(tags), DecisionOptions(), figures=False).warnings
    given = build_report(_study(tags), DecisionOptions(alpha=0.05), figures=False).warnings
    assert f"{sentence}; these verdicts use alpha 0.05 as given instead" in given
    assert not any("group-sequential" in w for w in build_report(_study({}), DecisionOptions(), figures=False).warnings)


def _at(cumulative: np.ndarray, n: np.ndarray) -> np.ndarray:
    """cumulative[..., n - 1] per element: the sum over each configuration's first n seeds."""
    return np.take_along_axis(cumulative, (n - 1)[..., None], axis=-1)[..., 0]


def _verdicts(x: np.ndarray, n: np.ndarray, level: np.ndarray, margin: float):
    """Verdict codes (R, k) of every configuration against the best at per-pair ``level`` (R,), the best, and
    each comparison's difference and per-seed spread (what a plan for more seeds scales)."""
    reps, k, _ = x.shape
    s1, s2 = np.cumsum(x, axis=2), np.cumsum(x**2, axis=2)
    mean = _at(s1, n) / n
    var = (_at(s2, n) - n * mean**2) / (n - 1)
    best = mean.argmin(axis=1)
    rows = np.arange(reps)
    n_ref, mean_ref, var_ref = n[rows, best][:, None], mean[rows, best][:, None], var[rows, best][:, None]
    va, vb = var / n, var_ref / n_ref  # Welch
    diff, se, sd = mean - mean_ref, np.sqrt(va + vb), np.sqrt(var + var_ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (n_ref - 1))
    d = x - x[rows, best][:, None, :]  # paired where the seed sets are the same (same count: the same prefix)
    d1, d2 = np.cumsum(d, axis=2), np.cumsum(d**2, axis=2)
    paired = n == n_ref
    dmean = _at(d1, n) / n
    dsd = np.sqrt(np.maximum(_at(d2, n) - n * dmean**2, 0) / (n - 1))
    diff, sd = np.where(paired, dmean, diff), np.where(paired, dsd, sd)
    se, df = np.where(paired, dsd / np.sqrt(n), se), np.where(paired, n - 1.0, df)
    se[rows, best] = np.inf  # the best is not compared with itself
    code = judge_arrays(diff, se, df, np.full(diff.shape, margin), level[:, None], higher_is_better=False)["code"]
    code[rows, best] = -1
    return code, best, diff, sd


def _spent(t: np.ndarray) -> np.ndarray:
    """O'Brien-Fleming spending over arrays (the module's function is scalar)."""
    with np.errstate(divide="ignore"):
        return np.where(t > 0, 2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - ALPHA / 2) / np.sqrt(np.minimum(t, 1))), 0.0)


def _needed(diff, sd, now, max_seeds, pairs) -> np.ndarray:
    """The smallest count m (now+1 .. max) at which a look, judging at its own share alpha*(m/max) - alpha*(now/max),
    would call a difference ``diff`` with per-seed spread ``sd`` with 80% power (normal approximation); max + 1
    where no m would (futile). study/sequential.py `open_rows` asks the guide the same question."""
    out = np.full(diff.shape, max_seeds + 1)
    for m in range(max_seeds, 1, -1):  # the smallest m that suffices is written last
        level = (_spent(np.full(now.shape, m / max_seeds)) - _spent(now / max_seeds)) / pairs
        z = stats.norm.ppf(1 - np.maximum(level, 1e-300) / 2)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            power = stats.norm.cdf(np.abs(diff) / (sd / math.sqrt(m)) - z)
        out = np.where((power >= 0.8) & (m > now[:, None]), m, out)
    return out


def simulate(x: np.ndarray, initial: int, margin: float, naive: bool = False, step: int | str = 1) -> float:
    """The share of studies with any false better/worse at any look. Each round adds seeds to the best and the
    inconclusive configurations, ``step`` at a time or (planned) straight to the count their comparisons need
    (comparisons no count up to max would decide stop: futile), until none is inconclusive or max. Each look
    judges at its share of alpha (``naive``: at alpha every time)."""
    reps, k, max_seeds = x.shape
    pairs, rows = k * (k - 1) // 2, np.arange(reps)
    n = np.full((reps, k), initial)
    now, before = np.full(reps, initial), np.zeros(reps)
    active, false = np.ones(reps, bool), np.zeros(reps, bool)
    while active.any():
        share = np.full(reps, ALPHA) if naive else _spent(now / max_seeds) - _spent(before / max_seeds)
        code, best, diff, sd = _verdicts(x, n, share / pairs, margin)
        false |= active & np.isin(code, [WORSE, BETTER]).any(axis=1)
        undecided = code == INCONCLUSIVE
        if step == "planned":
            need = np.where(undecided, _needed(diff, sd, now, max_seeds, pairs), max_seeds + 1)
            undecided &= need <= max_seeds
            after = np.where(undecided, need, 0).max(axis=1)
        else:
            after = now + int(step)
        active &= undecided.any(axis=1) & (now < max_seeds)
        grow = active[:, None] & (undecided | (np.arange(k)[None, :] == best[:, None]))
        before, now = np.where(active, now, before), np.where(active, np.minimum(max_seeds, after), now)
        n = np.where(grow, now[:, None], n)
        assert (n[rows] >= 2).all()
    return float(false.mean())


@pytest.mark.parametrize("k, initial, max_seeds, step", [(2, 3, 10, 1), (5, 3, 10, 1), (2, 2, 8, 2), (3, 3, 6, 1)])
def test_sequential_looks_hold_alpha_where_naive_peeking_does_not(k, initial, max_seeds, step):
    """All configurations truly equal, a margin too small to call them equivalent early: the study looks at
    every round to max (4 to 8 looks). Any false better/worse over all looks: <= alpha with spending."""
    reps = 4000
    rng = np.random.default_rng(1000 * k + 10 * initial + max_seeds)
    x = 1.4 + 0.01 * rng.standard_normal((reps, k, max_seeds))
    x += 0.01 * rng.standard_normal((reps, 1, max_seeds))  # a seed effect shared by every configuration: pairing
    margin = 0.001
    spent = simulate(x, initial, margin, step=step)
    naive = simulate(x, initial, margin, naive=True, step=step)
    looks = len(range(initial, max_seeds + 1, step))
    assert looks >= 3
    assert spent <= mc_bound(ALPHA, reps), f"alpha spending: {spent:.3f} of studies made a false call"
    assert naive > mc_bound(ALPHA, reps), f"naive peeking: only {naive:.3f}"


@pytest.mark.parametrize("k, spread", [(2, 0.01), (5, 0.01), (3, 0.002)])
def test_planned_jumps_hold_alpha(k, spread):
    """The default step jumps to the seeds the open comparisons need (data-dependent look times): still <= alpha
    with spending, and peeking at full alpha is still too often wrong."""
    reps = 4000
    rng = np.random.default_rng(77 * k)
    x = 1.4 + spread * rng.standard_normal((reps, k, 10)) + 0.01 * rng.standard_normal((reps, 1, 10))
    spent = simulate(x, 3, 0.001, step="planned")
    naive = simulate(x, 3, 0.001, naive=True, step="planned")
    assert spent <= mc_bound(ALPHA, reps), f"planned jumps: {spent:.3f} of studies made a false call"
    assert naive > mc_bound(ALPHA, reps), f"naive peeking: only {naive:.3f}"
