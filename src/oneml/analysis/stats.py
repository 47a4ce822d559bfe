"""Statistics across seeds: summaries with confidence intervals, paired tests, Holm's correction.

- Summary of one metric over a configuration's seeds: mean, sample standard deviation (ddof=1),
  coefficient of variation (std / |mean|), and a 95% confidence interval for the mean: Student's t
  interval by default, a seeded percentile bootstrap as an option.
- Comparison of two configurations on one metric: a paired t-test over the seeds both ran (seeds pair
  the data order and initialisation, so pairing removes that shared noise), the mean paired difference
  with its t-interval, and Cohen's d for paired data (d_z = mean difference / sd of differences). The
  Wilcoxon signed-rank test is added from 6 pairs on (see `WILCOXON_MIN_PAIRS`). With fewer than two
  shared seeds but two or more runs each, Welch's unpaired t-test stands in, and says so.
- A family of comparisons (every configuration against the best) is corrected with Holm's step-down
  method; a difference is "distinguishable" only when its corrected p-value is below alpha.
- One run has no spread: its summary carries a warning and it is never tested.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

# scipy.stats is imported inside the functions that use it: it costs about a second, which every CLI command
# would otherwise pay just to list the priorities in its help.

WILCOXON_MIN_PAIRS = 6
"""With n pairs the smallest two-sided exact Wilcoxon p-value is 2 / 2**n: 0.0625 at n = 5, so below 6
pairs the test could never reach 0.05 and reporting it would only look like evidence of no effect."""
SINGLE_RUN = "n=1: one run, no spread and no test"


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float
    """Sample standard deviation (ddof=1); NaN for one run."""
    cv: float
    """Coefficient of variation, std / |mean|; NaN when undefined."""
    ci_low: float
    ci_high: float
    interval: str
    """How the interval was computed: 't', 'bootstrap' or 'none'."""
    warning: str = ""


def summarize(values, confidence: float = 0.95, interval: str = "t", seed: int = 0) -> Summary:
    """Mean, spread and a confidence interval of ``values`` (one per seed)."""
    from scipy import stats

    x = np.asarray(list(values), dtype=float)
    n = len(x)
    if n == 0:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan, "none", "no runs recorded this metric")
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, float("nan"), float("nan"), mean, mean, "none", SINGLE_RUN)
    std = float(x.std(ddof=1))
    cv = std / abs(mean) if mean != 0 else float("nan")
    if interval == "bootstrap" and std > 0:
        res = stats.bootstrap((x,), np.mean, confidence_level=confidence, method="percentile", rng=seed)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    else:
        low, high = t_interval(mean, std, n, confidence)
        interval = "t"
    return Summary(n, mean, std, cv, low, high, interval)


def t_interval(
    mean: float, sd: float, n: int, confidence: float = 0.95, df: float | None = None
) -> tuple[float, float]:
    """mean ± t(1 - (1 - confidence) / 2, df) · sd / sqrt(n); df defaults to n - 1."""
    from scipy import stats

    if n < 2 or not math.isfinite(sd):
        return (float("nan"), float("nan"))
    half = stats.t.ppf(0.5 + confidence / 2, df if df is not None else n - 1) * sd / math.sqrt(n)
    return (mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    """``candidate`` against ``reference`` on one metric; ``diff`` = candidate - reference."""

    metric: str
    candidate: str
    reference: str
    n: int
    """Pairs (shared seeds) for a paired test; runs of the smaller side for Welch's test."""
    test: str
    """'paired t', 'Welch t' or 'none'."""
    diff: float
    ci_low: float
    ci_high: float
    p: float
    p_holm: float
    wilcoxon_p: float
    cohen_d: float
    note: str = ""

    def distinguishable(self, alpha: float) -> bool:
        return math.isfinite(self.p_holm) and self.p_holm < alpha

    @property
    def tested(self) -> bool:
        return self.test != "none"


def compare(
    metric: str, candidate: str, a: dict[str, float], reference: str, b: dict[str, float], confidence: float = 0.95
) -> Comparison:
    """Test ``a`` against ``b`` (``{seed: value}`` each): paired over shared seeds when there are two or more."""
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        return _paired(metric, candidate, reference, [a[s] for s in shared], [b[s] for s in shared], confidence)
    if len(a) >= 2 and len(b) >= 2:
        return _welch(metric, candidate, reference, list(a.values()), list(b.values()), confidence)
    nan = float("nan")
    diff = float(np.mean(list(a.values())) - np.mean(list(b.values()))) if a and b else nan
    why = SINGLE_RUN if min(len(a), len(b)) < 2 else "fewer than two shared seeds"
    return Comparison(metric, candidate, reference, len(shared), "none", diff, nan, nan, nan, nan, nan, nan, why)


def _paired(metric: str, cand: str, ref: str, a: list[float], b: list[float], confidence: float) -> Comparison:
    from scipy import stats

    d = np.asarray(a) - np.asarray(b)
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    low, high = t_interval(mean, sd, n, confidence)
    wilcoxon = float("nan")
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), 1e-300)
    if sd <= 1e-12 * scale:  # float rounding of a constant difference is not variation
        mean = 0.0 if abs(mean) <= 1e-12 * scale else mean
        # No variation in the differences: t is 0/0 (identical results) or infinite (a constant shift).
        p, dz = (1.0, 0.0) if mean == 0 else (0.0, math.copysign(math.inf, mean))
        note = "identical on every shared seed" if mean == 0 else "the same difference on every shared seed"
        return Comparison(metric, cand, ref, n, "paired t", mean, low, high, p, p, wilcoxon, dz, note)
    p = float(stats.ttest_rel(a, b).pvalue)
    if n >= WILCOXON_MIN_PAIRS and np.count_nonzero(d) > 0:
        with warnings.catch_warnings():  # ties and zeros make scipy fall back to the normal approximation
            warnings.simplefilter("ignore")
            wilcoxon = float(stats.wilcoxon(a, b).pvalue)
    return Comparison(metric, cand, ref, n, "paired t", mean, low, high, p, p, wilcoxon, mean / sd)


def _welch(metric: str, cand: str, ref: str, a: list[float], b: list[float], confidence: float) -> Comparison:
    from scipy import stats

    x, y = np.asarray(a), np.asarray(b)
    diff = float(x.mean() - y.mean())
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    pooled = math.sqrt(((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / (len(x) + len(y) - 2))
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        return Comparison(metric, cand, ref, min(len(x), len(y)), "Welch t", diff, diff, diff, p, p, math.nan, 0.0)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    p = float(stats.ttest_ind(x, y, equal_var=False).pvalue)
    d = diff / pooled if pooled > 0 else math.copysign(math.inf, diff)
    note = "no shared seeds: unpaired test"
    n = min(len(x), len(y))
    return Comparison(metric, cand, ref, n, "Welch t", diff, diff - half, diff + half, p, p, math.nan, d, note)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment; NaN entries (untested) are left out of the family and stay NaN.

    Sorted ascending, the i-th smallest (0-based) of m p-values becomes max over j <= i of min(1, (m - j) p_(j)).
    """
    tested = sorted((p, i) for i, p in enumerate(pvalues) if math.isfinite(p))
    m = len(tested)
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def against_best(
    metric: str, higher_is_better: bool, values: dict[str, dict[str, float]], confidence: float = 0.95
) -> tuple[str, list[Comparison]]:
    """The best configuration by mean, and every other one tested against it, Holm-corrected as one family.

    ``values`` maps a configuration label to its ``{seed: value}``; configurations without values are skipped.
    """
    means = {label: float(np.mean(list(v.values()))) for label, v in values.items() if v}
    if not means:
        raise ValueError(f"no configuration recorded {metric}")
    sign = 1 if higher_is_better else -1
    best = max(means, key=lambda label: (sign * means[label], len(values[label])))
    raw = [compare(metric, label, values[label], best, values[best], confidence) for label in means if label != best]
    adjusted = holm([c.p for c in raw])
    out = [_with_holm(c, p) for c, p in zip(raw, adjusted, strict=True)]
    return best, sorted(out, key=lambda c: sign * -means[c.candidate])


def _with_holm(c: Comparison, p_holm: float) -> Comparison:
    from dataclasses import replace

    return replace(c, p_holm=p_holm)


def brown_forsythe(a: list[float], b: list[float]) -> float:
    """p-value of the Brown-Forsythe test (Levene's, centred on medians) for equal spread; NaN below 2 each."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return float("nan")
    return float(stats.levene(a, b, center="median").pvalue)
