"""Verdicts: every configuration against the best gets exactly one of better, worse, equivalent or inconclusive.

One notion of "as good" for the whole guide: an equivalence margin delta on the quality metric (default 1% of
the best mean; `Margin`). For each configuration the difference from the reference (the best mean) gets two
intervals, and the verdict follows from them (Lakens 2017; Schuirmann 1987):

- ``equivalent``: the (1 - 2 a) interval lies inside (-delta, +delta) (two one-sided tests at level a, TOST).
  When the (1 - a) interval also excludes 0 the difference is real but inside the margin: the note says so.
- ``worse`` / ``better``: the (1 - a) interval excludes 0.
- ``inconclusive``: neither. "Not significant" is never "as good".

**Selection.** The reference is picked from the same data (the best sample mean), so a test against it is a
test against an extreme. The level a is therefore a Bonferroni share alpha / m with m = k(k - 1) / 2, the
number of *all* pairs among the k testable configurations: the intervals then hold for every pair at once,
whichever configuration turned out best, and a wrong verdict needs an interval that misses the truth. Per
pair the chance of a wrong verdict is at most a (for a true difference of exactly 0 only the (1 - a)
interval can err, one tail each way; otherwise only one side can err, and the narrower (1 - 2 a) interval's
miss on that side has chance a), so the chance of any wrong verdict in the guide is at most alpha. It is
conservative for k > 2; the calibration tests (tests/analysis/test_verdicts.py) measure it by simulation.
Hsu's multiple comparisons with the best would be less conservative, but its intervals make weak ("not
better than the best") claims, which a tie among the top configurations satisfies: they do not control the
rate of a false "worse" when configurations are truly equal, which is the error this guide must not make.

**Which test.** Paired t over the seeds when both configurations ran exactly the same seeds (a seed fixes the
data order and the initialisation, so pairing removes that shared noise); Welch's unpaired t on every run
otherwise (a seed set that only partly overlaps is not thrown away to pair the rest). No run is dropped; the
row says which test it used. Differences with no variation at all (the same value on every seed) get no
p-value and no infinite effect size: they are flagged, since a seed that changes nothing was probably not
applied.

**How many seeds would decide it.** For an inconclusive comparison, `seeds_needed` is the smallest number of
seeds per configuration at which the same procedure (same a) reaches a verdict with probability >= 80%,
taking the observed difference and spread as the truth: power of the t-test from the noncentral t, plus the
chance of an equivalence verdict (normal approximation).

Effect sizes (named once): d_z = mean paired difference / sd of the paired differences (paired); d_s = mean
difference / pooled sd of the two configurations (Welch). Lakens 2013.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from oneml.errors import OnemlError

VERDICTS = ("better", "worse", "equivalent", "inconclusive")
POWER = 0.8
MAX_SEEDS = 1000
IDENTICAL = "identical results on every seed (seed not applied, or a metric too coarse to differ?)"
DEFAULT_MARGIN = "1%"


@dataclass(frozen=True)
class Margin:
    """The equivalence margin: relative to the best mean (``1%``) or in the metric's own units (``0.02``)."""

    value: float
    relative: bool

    def resolve(self, reference_mean: float) -> float:
        return self.value * abs(reference_mean) if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


def parse_margin(spec: object, field: str = "margin") -> Margin:
    """``"1%"`` (relative to the best mean), ``0.02`` / ``"0.02"`` (metric units), or ``{relative: 0.01}`` /
    ``{absolute: 0.02}``. A margin must be positive: zero would make "equivalent" impossible."""
    if isinstance(spec, Margin):
        return spec
    if isinstance(spec, Mapping):
        if len(spec) != 1 or next(iter(spec)) not in ("relative", "absolute"):
            raise OnemlError(f"{field}: expected {{relative: 0.01}} or {{absolute: 0.02}}, got {dict(spec)!r}")
        kind, value = next(iter(spec.items()))
        return _margin(value, kind == "relative", field)
    text = str(spec).strip()
    match = re.fullmatch(r"([0-9.eE+-]+)\s*%", text)
    if match:
        return _margin(match.group(1), True, field, scale=0.01)
    return _margin(text, False, field)


def _margin(value: object, relative: bool, field: str, scale: float = 1.0) -> Margin:
    try:
        number = float(value) * scale  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0) or (relative and number >= 1):
        raise OnemlError(f"{field}: must be a positive percentage below 100% (e.g. 1%) or metric units, got {value!r}")
    return Margin(number, relative)


@dataclass(frozen=True)
class Difference:
    """candidate - reference on one metric, with what its t intervals need."""

    diff: float
    se: float
    df: float
    test: str
    """'paired t', 'Welch t' or 'none'."""
    n: int
    """Pairs for the paired test; runs of the smaller side for Welch."""
    n_candidate: int
    n_reference: int
    sd: float
    """The spread the power calculation scales: sd of paired differences, or sqrt(sd_a^2 + sd_b^2) for Welch."""
    effect: float
    effect_kind: str
    """'d_z' (paired) or 'd_s' (Welch); '' when untested."""
    note: str = ""

    @property
    def tested(self) -> bool:
        return self.test != "none"


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}


def _constant(x: np.ndarray) -> bool:
    scale = max(float(np.max(np.abs(x))), 1e-300)
    return float(np.ptp(x)) <= 1e-12 * scale  # float rounding of one value is not variation


def difference(a: Mapping[str, float], b: Mapping[str, float]) -> Difference:
    """``a`` (candidate) minus ``b`` (reference), each ``{seed: value}``; NaN values are not results."""
    a, b = _finite(a), _finite(b)
    na, nb = len(a), len(b)
    diff = float(np.mean(list(a.values())) - np.mean(list(b.values()))) if a and b else math.nan
    if min(na, nb) < 2:
        return _untested(diff, na, nb, "n=1: one run, no spread and no test" if a and b else "no runs")
    x, y = np.array(list(a.values())), np.array(list(b.values()))
    if _constant(x) and _constant(y):
        return _untested(diff, na, nb, IDENTICAL)
    if set(a) == set(b):
        seeds = sorted(a)
        d = np.array([a[s] - b[s] for s in seeds])
        if not _constant(d):
            sd = float(d.std(ddof=1))
            return Difference(float(d.mean()), sd / math.sqrt(len(d)), len(d) - 1, "paired t", len(d), na, nb, sd,
                              float(d.mean()) / sd, "d_z")  # fmt: skip
        note = "the same difference on every seed: unpaired test instead"
    else:
        shared = len(set(a) & set(b))
        note = f"seeds differ ({shared} shared of {na} and {nb}): unpaired test on every run"
    return _welch(x, y, note)


def _untested(diff: float, na: int, nb: int, note: str) -> Difference:
    nan = math.nan
    return Difference(diff, nan, nan, "none", min(na, nb), na, nb, nan, nan, "", note)


def _welch(x: np.ndarray, y: np.ndarray, note: str) -> Difference:
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    se = math.sqrt(vx / len(x) + vy / len(y))
    df = (vx / len(x) + vy / len(y)) ** 2 / ((vx / len(x)) ** 2 / (len(x) - 1) + (vy / len(y)) ** 2 / (len(y) - 1))
    pooled = math.sqrt(((len(x) - 1) * vx + (len(y) - 1) * vy) / (len(x) + len(y) - 2))
    diff = float(x.mean() - y.mean())
    n = min(len(x), len(y))
    return Difference(diff, se, df, "Welch t", n, len(x), len(y), math.sqrt(vx + vy), diff / pooled, "d_s", note)


@dataclass(frozen=True)
class Comparison:
    """``candidate`` against ``reference`` on one metric, with its verdict. ``diff`` = candidate - reference."""

    metric: str
    candidate: str
    reference: str
    higher_is_better: bool
    d: Difference
    margin: float
    """delta, in metric units."""
    family: int
    """m: the number of pairs the level is shared among (alpha / m each)."""
    alpha: float
    ci_low: float
    ci_high: float
    """The (1 - alpha/m) interval of the difference: better / worse when it excludes 0."""
    eq_low: float
    eq_high: float
    """The (1 - 2 alpha/m) interval: equivalent when inside (-margin, +margin) (TOST at alpha/m)."""
    p: float
    """Two-sided p-value of the difference (unadjusted)."""
    p_adjusted: float
    """min(1, m * p): below alpha exactly when the (1 - alpha/m) interval excludes 0."""
    verdict: str
    note: str = ""
    seeds_needed: int | None = None
    """For an inconclusive verdict: seeds per configuration that would decide it (80% power); None otherwise or
    when no number of seeds up to MAX_SEEDS would (or the spread is unknown)."""

    @property
    def diff(self) -> float:
        return self.d.diff

    @property
    def n(self) -> int:
        return self.d.n

    @property
    def test(self) -> str:
        return self.d.test

    @property
    def tested(self) -> bool:
        return self.d.tested

    @property
    def decided(self) -> bool:
        return self.verdict != "inconclusive"


def level(alpha: float, family: int) -> float:
    return alpha / max(1, family)


def judge_arrays(diff, se, df, margin, a: float, higher_is_better: bool) -> dict[str, np.ndarray]:
    """The verdict rule over arrays (one element per comparison), so a simulation runs the very code the guide
    runs. Returns the verdict code per element (index into VERDICTS), both intervals and the p-value."""
    from scipy import stats

    diff, se, df, margin = (np.asarray(v, dtype=float) for v in (diff, se, df, margin))
    t1, t2 = stats.t.ppf(1 - a / 2, df), stats.t.ppf(1 - a, df)
    ci_low, ci_high = diff - t1 * se, diff + t1 * se
    eq_low, eq_high = diff - t2 * se, diff + t2 * se
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(diff) / se, df)
    worse = ci_high < 0 if higher_is_better else ci_low > 0
    better = ci_low > 0 if higher_is_better else ci_high < 0
    equivalent = (-margin < eq_low) & (eq_high < margin)
    code = np.full(diff.shape, VERDICTS.index("inconclusive"))
    code[worse] = VERDICTS.index("worse")
    code[better] = VERDICTS.index("better")
    code[equivalent] = VERDICTS.index("equivalent")  # inside the margin wins: "different but equivalent"
    code[~np.isfinite(se)] = VERDICTS.index("inconclusive")
    return {"code": code, "ci_low": ci_low, "ci_high": ci_high, "eq_low": eq_low, "eq_high": eq_high, "p": p,
            "different": worse | better}  # fmt: skip


def judge(d: Difference, margin: float, a: float, higher_is_better: bool) -> tuple[str, tuple[float, ...], str]:
    """The verdict from the two intervals at per-pair level ``a``; returns (verdict, (ci, eq, p), note)."""
    nan = math.nan
    if not d.tested:
        return "inconclusive", (nan, nan, nan, nan, nan), d.note
    r = {k: v.item() for k, v in judge_arrays(d.diff, d.se, d.df, margin, a, higher_is_better).items()}
    verdict = VERDICTS[r["code"]]
    notes = [d.note] if d.note else []
    if verdict == "equivalent" and r["different"]:
        notes.append("a real difference, but inside the margin")
    return verdict, (r["ci_low"], r["ci_high"], r["eq_low"], r["eq_high"], r["p"]), "; ".join(notes)


def compare(
    metric: str,
    candidate: str,
    a: Mapping[str, float],
    reference: str,
    b: Mapping[str, float],
    *,
    higher_is_better: bool,
    margin: float,
    alpha: float = 0.05,
    family: int = 1,
    fallback_sd: float | None = None,
    plan_family: int | None = None,
) -> Comparison:
    """One verdict for ``candidate`` (``a``) against ``reference`` (``b``) at level alpha / family.

    ``plan_family``: the family once every configuration has seeds enough to be tested (for ``seeds_needed``:
    adding seeds to single-run configurations makes them testable, and so shares the level more thinly)."""
    d = difference(a, b)
    a_pair = level(alpha, family)
    verdict, (lo, hi, eq_lo, eq_hi, p), note = judge(d, margin, a_pair, higher_is_better)
    needed = None
    if verdict == "inconclusive":
        sd, paired = (d.sd, d.test == "paired t") if d.tested else (_fallback(fallback_sd, d), False)
        current = min(d.n_candidate, d.n_reference)  # the smaller side is the one more seeds must reach
        a_plan = level(alpha, max(family, plan_family or family))
        needed = seeds_needed(abs(d.diff), sd, margin, a_plan, paired, current) if math.isfinite(d.diff) else None
        if not d.tested and fallback_sd is not None and needed is not None and d.note != IDENTICAL:
            note += "; seeds needed assume the spread of the replicated configurations"
    p_adj = min(1.0, p * max(1, family)) if math.isfinite(p) else math.nan
    return Comparison(metric, candidate, reference, higher_is_better, d, margin, max(1, family), alpha, lo, hi,
                      eq_lo, eq_hi, p, p_adj, verdict, note, needed)  # fmt: skip


def _fallback(fallback_sd: float | None, d: Difference) -> float:
    if d.note == IDENTICAL or fallback_sd is None:
        return math.nan
    return math.sqrt(2) * fallback_sd  # two configurations with the pooled spread each, unpaired


def pooled_sd(values: Mapping[str, Mapping[str, float]]) -> float | None:
    """The pooled within-configuration sd over configurations with two or more (finite, not all equal) runs."""
    num, den = 0.0, 0
    for v in values.values():
        x = np.array(list(_finite(v).values()))
        if len(x) >= 2 and not _constant(x):
            num += float(x.var(ddof=1)) * (len(x) - 1)
            den += len(x) - 1
    return math.sqrt(num / den) if den else None


def decide_probability(diff: float, sd: float, margin: float, a: float, n: int, paired: bool) -> float:
    """Chance that the procedure reaches a verdict with ``n`` seeds per configuration if ``diff`` and ``sd`` were
    the truth: P(the (1 - a) interval excludes 0) [noncentral t] + P(the (1 - 2a) interval inside the margin)
    [normal approximation] - their overlap."""
    from scipy import stats

    if n < 2 or not (math.isfinite(sd) and sd > 0):
        return 0.0
    df = n - 1 if paired else 2 * (n - 1)  # Welch with equal n and similar spreads
    se = sd / math.sqrt(n)
    t1, t2 = stats.t.ppf(1 - a / 2, df), stats.t.ppf(1 - a, df)
    ncp = diff / se
    different = float(stats.nct.sf(t1, df, ncp) + stats.nct.cdf(-t1, df, ncp))
    if not math.isfinite(different):  # scipy's noncentral t can return NaN at large noncentrality
        different = float(stats.norm.sf(t1 - ncp) + stats.norm.cdf(-t1 - ncp))
    inner = margin - t2 * se
    if inner <= 0:
        return different
    z = stats.norm
    equivalent = float(z.cdf((inner - diff) / se) - z.cdf((-inner - diff) / se))
    both_hi = max(0.0, float(z.cdf((inner - diff) / se) - z.cdf((t1 * se - diff) / se))) if inner > t1 * se else 0.0
    both_lo = max(0.0, float(z.cdf((-t1 * se - diff) / se) - z.cdf((-inner - diff) / se))) if inner > t1 * se else 0.0
    return min(1.0, different + equivalent - both_hi - both_lo)


def seeds_needed(
    diff: float, sd: float, margin: float, a: float, paired: bool, current: int = 2, power: float = POWER
) -> int | None:
    """Smallest seeds per configuration (above ``current``) that decide with probability >= ``power``."""
    if not (math.isfinite(sd) and sd > 0 and math.isfinite(diff)):
        return None
    lo = max(2, current + 1)
    if decide_probability(diff, sd, margin, a, MAX_SEEDS, paired) < power:
        return None
    hi = MAX_SEEDS
    while lo < hi:  # the probability grows with n (up to rounding at tiny n): bisect
        mid = (lo + hi) // 2
        if decide_probability(diff, sd, margin, a, mid, paired) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class Ranking:
    """Every configuration that recorded the metric against the best one."""

    metric: str
    higher_is_better: bool
    best: str
    margin: float
    family: int
    comparisons: list[Comparison]
    untested_best: bool
    """True when the best has a single run (nothing can be tested against it)."""

    def verdict(self, label: str) -> str:
        if label == self.best:
            return "best"
        return next(c.verdict for c in self.comparisons if c.candidate == label)

    @property
    def contenders(self) -> list[str]:
        """The best and every configuration equivalent to it."""
        return [self.best] + [c.candidate for c in self.comparisons if c.verdict == "equivalent"]

    @property
    def undecided(self) -> list[str]:
        return [c.candidate for c in self.comparisons if c.verdict == "inconclusive"]

    @property
    def decided(self) -> bool:
        return not self.undecided


def rank(
    metric: str,
    higher_is_better: bool,
    values: Mapping[str, Mapping[str, float]],
    margin: Margin,
    alpha: float = 0.05,
) -> Ranking:
    """The best configuration by mean (NaN never wins) and a verdict for every other one against it.

    ``values`` maps a label to ``{seed: value}``; NaN values are dropped (a NaN result is a failure, counted by
    the stability rule), labels left without a value are not ranked. Ties go to the configuration with more runs.
    """
    clean = {label: _finite(v) for label, v in values.items()}
    clean = {label: v for label, v in clean.items() if v}
    if not clean:
        raise OnemlError(f"no configuration recorded a finite {metric}")
    means = {label: float(np.mean(list(v.values()))) for label, v in clean.items()}
    sign = 1 if higher_is_better else -1
    best = max(means, key=lambda label: (sign * means[label], len(clean[label])))
    testable = sum(len(v) >= 2 for v in clean.values())
    family = max(1, testable * (testable - 1) // 2)
    plan = max(1, len(clean) * (len(clean) - 1) // 2)
    delta = margin.resolve(means[best])
    spread = pooled_sd(clean)
    out = [
        compare(
            metric,
            label,
            clean[label],
            best,
            clean[best],
            higher_is_better=higher_is_better,
            margin=delta,
            alpha=alpha,
            family=family,
            fallback_sd=spread,
            plan_family=plan,
        )  # fmt: skip
        for label in clean
        if label != best
    ]
    out.sort(key=lambda c: -sign * means[c.candidate])
    return Ranking(metric, higher_is_better, best, delta, family, out, len(clean[best]) < 2)
