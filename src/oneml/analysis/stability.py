"""Stability of a configuration across seeds: how often it fails, how much it spreads, and whether two differ.

The decision guide's "Production stability" row should read these in this order:

1. **Failure rate first.** A run that failed, diverged or ended with a NaN metric is a failure of that
   configuration, not a missing value: `failure_rate` gives k of n with the Clopper-Pearson exact interval
   (Clopper & Pearson 1934, Biometrika 26:404), which never covers less than its nominal level (at 0 of 6 the
   upper bound is 1 - 0.025**(1/6) = 0.459: six clean seeds do not show a configuration never fails).
   `failure_test` compares two rates with Boschloo's exact test (Boschloo 1970, Statistica Neerlandica 24:1).
   It is exact like Fisher's test (its size stays <= alpha whatever the common failure rate) and uniformly
   more powerful, because it does not condition on the total number of failures, which the study design
   does not fix (only the seeds per configuration are fixed): 4 of 8 against 0 of 8 gives p = 0.028, where
   Fisher gives 0.077. 2 of 8 against 0 of 8 gives 0.21: rank by failure rate, and say "not significant".
2. **Then the spread, with an interval.** `sd_interval` is the chi-square interval of the standard deviation
   (normal data). It is very wide at few seeds (its upper bound is 6.3 times the observed sd at n = 3 and 2.5
   times at n = 6): that is the honest answer.
3. **A spread test only from 5 seeds per configuration** (`MIN_SPREAD_N`). `spread_test` is a permutation
   test of log(sd_a / sd_b) on the values centred on each group's median, without the median's own residual
   at odd n (it is 0 by construction; Hines & Hines 2000, Biometrics 56:451, remove these "structural zeros"
   from the Brown-Forsythe test). Boos & Brownie (1989, Technometrics 31:69) resample centred values in the
   same spirit. Centred values are only approximately exchangeable, so the centre was chosen by simulation
   (10000 studies per cell, equal true spreads, different means; tests/analysis/test_stability.py holds the
   calibration):

   ========================  ===============================  ===============================
   null error at alpha = 5%  centred on means, n = 5/6/7/8    centred on medians (used)
   ========================  ===============================  ===============================
   normal                    4.1% / 4.4% / 4.6% / 4.9%        1.3% / 3.0% / 3.8% / 3.1%
   uniform                   4.1% / 4.7% / 4.8% / 4.3%        1.4% / 3.0% / 3.3% / 2.6%
   t with 3 df               6.9% / 7.0% / 7.0% / 6.8%        1.8% / 3.0% / 4.4% / 3.4%
   gamma(4) (skew 1)         5.6% / 5.9% / 6.4% / 6.7%        1.6% / 3.4% / 4.6% / 3.9%
   exponential (skew 2)      12.7% / 13.0% / 12.6% / 13.1%    3.7% / 6.3% / 7.0% / 6.3%
   ========================  ===============================  ===============================

   Mean centring is near nominal for normal data and has more power (31% / 42% / 61% against a 3x sd ratio
   at n = 5 / 6 / 8, medians 13% / 29% / 50%), but a heavy-tailed or skewed metric, which a few seeds cannot
   reveal, makes it call equal spreads different; median centring holds alpha except under strong skew.
   The price is power: at n seeds per configuration the test has about the power of the normal-theory F
   test at n - 3 seeds (`PERMUTATION_SEED_COST`; the F test has 48% / 60% / 77% above), and
   `seeds_for_spread` charges that. Splits are enumerated exactly up to `EXACT_SPLITS` (70 at 5 + 5 seeds,
   12870 at 8 + 8), else sampled with a seed; the observed split counts, so p is never 0.

   Brown-Forsythe (Levene's test on absolute deviations from the median, Brown & Forsythe 1974, JASA 69:364),
   the old row's test, cannot be used at these n: with 2 seeds each both deviations in a group are equal, its
   within-group variance is 0 and p is about 1e-30 whatever the truth (it rejected in 100% of 2000 studies
   with equal variances); with 3 seeds each one deviation is 0 and it never rejected (smallest p 0.13).
4. **Identical results on every seed** (`identical`) say the seed was not applied, not that a configuration is
   perfectly stable: they are flagged ("seed not applied?") and never tested (no p = 0).

numpy and scipy only (no torch); scipy.stats is imported where used, as in `oneml.analysis.stats`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

MIN_SPREAD_N = 5
"""Fewest seeds per configuration for a spread p-value. Below it Brown-Forsythe rejects always
(2 seeds) or never (3); the permutation test cannot go below p = 1/3 at 3 seeds, and at 4 it holds alpha (3.6%)
but detects a 3x sd ratio 20% of the time: a p-value there would mostly look like evidence of equal spread."""
EXACT_SPLITS = 20_000
"""Enumerate every split of the pooled values up to this many (8 + 8 seeds: 12870), else sample them."""
PERMUTATION_SEED_COST = 3
"""The median-centred permutation test at n seeds has about the power of the F test at n - 3 seeds (measured
at sd ratios 1.5, 2 and 3 and n = 5..26, 3000 studies each: the gap was 1.9 to 4.1 seeds, about 3.4 at even n
and 2.5 at odd n, so predictions are within about 5 points of the simulated power)."""
NO_SPREAD_TEST = "fewer than {n} seeds per configuration: no spread test"
SEED_NOT_APPLIED = "identical results on every seed (seed not applied, or a metric too coarse to differ?)"


@dataclass(frozen=True)
class Rate:
    """k failures out of n runs, with an exact (Clopper-Pearson) interval of the rate."""

    k: int
    n: int
    rate: float
    """k / n; NaN when n = 0."""
    low: float
    high: float
    confidence: float = 0.95

    def text(self) -> str:
        """E.g. '2 of 8 failed (25%, 95% CI 3%-65%)'."""
        if self.n == 0:
            return "no runs"
        level = f"{self.confidence:.0%}"
        return f"{self.k} of {self.n} failed ({self.rate:.0%}, {level} CI {self.low:.0%}-{self.high:.0%})"


def failure_rate(failed: int, total: int, confidence: float = 0.95) -> Rate:
    """Failed (or diverged, or NaN-metric) runs out of all runs, with the Clopper-Pearson exact interval."""
    from scipy import stats

    if not 0 <= failed <= total:
        raise ValueError(f"failed: must be between 0 and total ({total}), got {failed}")
    if total == 0:
        nan = float("nan")
        return Rate(0, 0, nan, nan, nan, confidence)
    ci = stats.binomtest(failed, total).proportion_ci(confidence_level=confidence, method="exact")
    return Rate(failed, total, failed / total, float(ci.low), float(ci.high), confidence)


def failure_test(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value that two failure rates differ (Boschloo's exact test); NaN when either has no runs."""
    from scipy import stats

    if not (0 <= k1 <= n1 and 0 <= k2 <= n2):
        raise ValueError(f"failures must be between 0 and the runs, got {k1} of {n1} and {k2} of {n2}")
    if n1 == 0 or n2 == 0:
        return float("nan")
    if k1 + k2 in (0, n1 + n2):
        # Nothing or everything failed: no difference to see (scipy returns NaN for some such tables).
        return 1.0
    # scipy's columns are the two binomial samples: (failed, succeeded) of each configuration.
    return float(stats.boschloo_exact([[k1, k2], [n1 - k1, n2 - k2]], alternative="two-sided").pvalue)


def _finite(values, what: str) -> np.ndarray:
    x = np.asarray(list(values), dtype=float)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: values must be finite; failed and NaN runs count in failure_rate, not here")
    return x


def sd_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Sample sd (ddof=1) and its chi-square confidence interval (normal data); NaN below 2 values.

    s * sqrt((n - 1) / chi2(1 - a/2, n - 1)) .. s * sqrt((n - 1) / chi2(a/2, n - 1)), a = 1 - confidence.
    """
    from scipy import stats

    x = _finite(values, "sd_interval")
    n = len(x)
    if n < 2:
        nan = float("nan")
        return (nan, nan, nan)
    s = float(x.std(ddof=1))
    a = 1 - confidence
    upper_q, lower_q = stats.chi2.ppf([1 - a / 2, a / 2], n - 1)
    return (s, s * math.sqrt((n - 1) / upper_q), s * math.sqrt((n - 1) / lower_q))


def identical(values, rtol: float = 1e-9) -> bool:
    """Whether every seed gave the same value (within ``rtol``): the seed was probably not applied.

    One value is never "identical" (there is nothing to compare); non-finite values are not either.
    """
    x = np.asarray(list(values), dtype=float)
    if len(x) < 2 or not np.all(np.isfinite(x)):
        return False
    return bool(np.ptp(x) <= rtol * max(float(np.max(np.abs(x))), np.finfo(float).tiny))


@dataclass(frozen=True)
class SpreadTest:
    """Permutation test that two configurations spread equally across seeds."""

    p: float
    """Two-sided p-value; NaN when no test was made (see ``note``)."""
    statistic: float
    """log(sd_a / sd_b) (ddof=1); positive when ``a`` spreads more; NaN when either group is identical."""
    method: str
    note: str = ""


def spread_test(a, b, min_n: int = MIN_SPREAD_N, seed: int = 0, n_resamples: int = 9999) -> SpreadTest:
    """Permutation test of log(sd_a / sd_b) on median-centred values (see the module docstring).

    ``a`` and ``b`` are one configuration's finite values per seed each (count failures with
    `failure_rate`). No p-value below ``min_n`` seeds in either, nor when a group gave identical results.
    """
    if min_n < MIN_SPREAD_N:
        raise ValueError(f"min_n: must be at least {MIN_SPREAD_N} (no spread test holds its error below), got {min_n}")
    x, y = _finite(a, "spread_test a"), _finite(b, "spread_test b")
    nan = float("nan")
    method = "permutation of log sd ratio, median-centred"
    same_x, same_y = identical(x), identical(y)
    if same_x or same_y:
        note = SEED_NOT_APPLIED if same_x and same_y else f"configuration {'a' if same_x else 'b'}: {SEED_NOT_APPLIED}"
        return SpreadTest(nan, nan, method, note)
    statistic = float(np.log(x.std(ddof=1) / y.std(ddof=1))) if min(len(x), len(y)) >= 2 else nan
    if min(len(x), len(y)) < min_n:
        return SpreadTest(nan, statistic, method, NO_SPREAD_TEST.format(n=min_n))
    kept = [n - n % 2 for n in (len(x), len(y))]  # residuals the test permutes (see _median_residuals)
    splits = math.comb(sum(kept), kept[0])
    how = f"exact over {splits} splits" if splits <= EXACT_SPLITS else f"{n_resamples} random splits, seed {seed}"
    p = float(spread_pvalues(x[None], y[None], seed=seed, n_resamples=n_resamples)[0])
    return SpreadTest(p, statistic, f"{method}, {how}")


def spread_pvalues(a, b, seed: int = 0, n_resamples: int = 9999) -> np.ndarray:
    """`spread_test`'s p-values for many studies at once: ``a`` is (studies, n_a), ``b`` (studies, n_b).

    No checks (the calibration tests call it on thousands of simulated studies): use `spread_test` on data.
    Every study is tested over the same set of splits, so one matrix product serves them all.
    """
    ra, rb = _median_residuals(np.asarray(a, dtype=float)), _median_residuals(np.asarray(b, dtype=float))
    n_a, n_b = ra.shape[1], rb.shape[1]
    x = np.hstack([ra, rb])
    masks = _splits(n_a, n_b, n_resamples, np.random.default_rng(seed))
    observed = np.abs(_log_sd_ratio(x, np.r_[np.ones(n_a), np.zeros(n_b)][None], n_a, n_b))  # (R, 1)
    p = np.empty(len(x))
    chunk = max(1, 4_000_000 // len(masks))  # bounds the (studies, splits) matrix to ~32 MB
    for i in range(0, len(x), chunk):
        t = np.abs(_log_sd_ratio(x[i : i + chunk], masks, n_a, n_b))  # (chunk, splits)
        # The tolerance keeps the observed split (and its mirror at equal n) counted despite rounding.
        p[i : i + chunk] = np.count_nonzero(t >= observed[i : i + chunk] - 1e-9, axis=1) / len(masks)
    return p


def _median_residuals(x: np.ndarray) -> np.ndarray:
    """Each row minus its median, without the median's own residual at odd n (Hines & Hines 2000).

    That residual is 0 by construction: permuted, two such zeros land in one group and make splits more
    extreme than any real sample can be (5 + 5 seeds, one group 100 times wider: p = 12/252 = 0.048 with
    the zeros, 2/70 = 0.029 without).
    """
    n = x.shape[1]
    residuals = np.sort(x, axis=1) - np.median(x, axis=1, keepdims=True)  # order does not matter to the test
    return np.delete(residuals, n // 2, axis=1) if n % 2 else residuals


def _splits(n_a: int, n_b: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """0/1 masks (splits, n_a + n_b) marking group a: every split, or the observed one plus random ones."""
    n = n_a + n_b
    if math.comb(n, n_a) <= EXACT_SPLITS and n_a == n_b:
        # Equal groups: a split and its mirror (a and b swapped) have the same |statistic|, so the half of
        # the splits that put value 0 in group a gives the same p-value at half the cost.
        members = np.array([(0, *rest) for rest in itertools.combinations(range(1, n), n_a - 1)])
    elif math.comb(n, n_a) <= EXACT_SPLITS:
        members = np.array(list(itertools.combinations(range(n), n_a)))
    else:
        # The observed split is one of the resamples, so p >= 1 / (n_resamples + 1) and never 0.
        drawn = np.argsort(rng.random((n_resamples, n)), axis=1)[:, :n_a]
        members = np.vstack([np.arange(n_a)[None], drawn])
    masks = np.zeros((len(members), n))
    masks[np.arange(len(members))[:, None], members] = 1.0
    return masks


def _log_sd_ratio(x: np.ndarray, masks: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    """log(sd of the masked values / sd of the rest) for every study (row of x) and split (row of masks)."""
    # n * (sum of squares about the group mean) = n * sum(x^2) - sum(x)^2, every term from one matrix product:
    # products are cheap next to elementwise passes over the (studies, splits) matrix, so few of those, in place.
    # The values are centred, so the subtraction does not cancel badly.
    sq, rest = x * x, 1.0 - masks
    spread_a = (n_a * sq) @ masks.T  # (R, S)
    spread_a -= np.square(x @ masks.T)
    spread_b = (n_b * sq) @ rest.T
    spread_b -= np.square(x @ rest.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(np.maximum(spread_a, 0.0, out=spread_a), np.maximum(spread_b, 0.0, out=spread_b), out=spread_a)
        np.log(spread_a, out=spread_a)
    # var_a / var_b = spread_a / spread_b * n_b (n_b - 1) / (n_a (n_a - 1)); half the log of it is the log sd ratio.
    spread_a += math.log(n_b * (n_b - 1) / (n_a * (n_a - 1)))
    spread_a *= 0.5
    return spread_a


def seeds_for_spread(ratio: float, alpha: float, power: float = 0.8, max_n: int = 200) -> int | None:
    """About how many seeds per configuration `spread_test` needs to detect an sd ratio ``ratio`` (> 1).

    The two-sided F test of the variance ratio at equal n is the approximation, charged
    `PERMUTATION_SEED_COST` seeds for the permutation test's lower power; never below `MIN_SPREAD_N`.
    None when ``ratio`` <= 1 (or not finite) or more than ``max_n`` seeds would be needed.
    """
    if not math.isfinite(ratio) or ratio <= 1:
        return None
    for n in range(MIN_SPREAD_N, max_n + 1):
        if f_test_power(n - PERMUTATION_SEED_COST, ratio, alpha) >= power:
            return n
    return None


def f_test_power(n: int, ratio: float, alpha: float) -> float:
    """Power of the two-sided F test of equal variances, n values per group, at true sd ratio ``ratio``."""
    from scipy import stats

    if n < 2:
        return 0.0
    df = n - 1
    low, high = stats.f.ppf([alpha / 2, 1 - alpha / 2], df, df)
    # s_a^2 / s_b^2 is ratio^2 times an F(df, df) variable.
    r2 = ratio * ratio
    return float(stats.f.cdf(low / r2, df, df) + stats.f.sf(high / r2, df, df))
