"""Win rates from pairwise judgments, and the length-controlled win rate of AlpacaEval 2.0.

On each prompt x a judge compares the model's answer with the opponent's twice, once in each order; a judgment is
1 (the model's answer preferred), 0 (the opponent's) or 0.5 (a tie), and the prompt's preference y_x is the mean of
its two judgments, so a judge that favours the first (or second) position gains nothing: each answer sat there once.

    win rate = mean_x y_x

The length-controlled win rate (Dubois et al. 2024, "Length-Controlled AlpacaEval", arXiv:2404.04475, section 3)
fits a logistic GLM to the preferences,

    P(model preferred | x) = sigmoid(theta + phi * tanh(d_x / sd(d)) + (psi_m - psi_b) * gamma_x)

with theta the model's identity term against the baseline, d_x = len(model answer) - len(opponent answer) in
characters and sd(d) its sample standard deviation over the prompts (not centred: AlpacaEval divides the length
difference by its std, then takes tanh), gamma_x the instruction's difficulty, and asks "what would the preference
be if both answers had the same length?": the prediction with the length term zeroed, averaged over the prompts.
The labels are soft (0, 0.25, ..., 1): the fit minimises cross-entropy against them, as AlpacaEval's does.

What one judged model allows, and what was chosen:
- Instruction difficulty gamma_x. AlpacaEval reads it from a table fitted once over its whole leaderboard on its
  805 instructions. oneml judges one model on the run's own held-out prompts, for which no such table exists; a
  difficulty fitted from this one comparison is one free parameter per prompt (every y_x fitted exactly, nothing
  left to estimate theta from). The term is left out, so LC = mean_x sigmoid(theta) = sigmoid(theta).
- Regularisation. AlpacaEval fits with an L1 penalty chosen by 5-fold cross-validation and adds rows of its
  baseline made verbose and concise (weight 0.1 each) to anchor phi. With two parameters and tens of prompts the
  plain maximum-likelihood fit is well defined; a weak ridge (prior sd 10 on the logit scale, negligible at any
  real sample size) only keeps it finite when every prompt goes one way. No gamed-baseline rows: they need the
  opponent's answers regenerated as verbose and as concise, twice the generation and judging.
- Interval. The delta method: the sandwich (robust) covariance of (theta, phi) over prompts (prompts are
  independent; the soft labels are not binomial, so the model-based variance would be wrong), with the HC1
  small-sample factor n / (n - k); the interval is theta +- t(n - k) * se mapped through the sigmoid, so it stays
  inside (0, 1). The same machinery with theta alone gives the plain win rate's interval (its fit is the mean).
  When every prompt went the same way (no spread to estimate a variance from) the interval is Clopper-Pearson's
  for n of n (or 0 of n). Coverage at a known true rate, and the correction removing a pure length bias, are
  checked by simulation in tests/analysis/test_winrate_calibration.py.

Everything is vectorised over leading batch dimensions, so the calibration tests fit thousands of data sets at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

RIDGE = 0.01
"""Penalty 0.5 * RIDGE * |beta|^2: a normal prior of sd 10 on the logit scale, only to keep separated fits finite."""
NEWTON_STEPS = 60
MAX_STEP = 5.0
"""Newton steps are clipped to this size on the logit scale: a step from a flat start cannot overshoot wildly."""


@dataclass(frozen=True)
class WinRate:
    """Both win rates with their intervals, as fractions in [0, 1]."""

    n: int
    """Prompts with both judgments (the others are not counted anywhere)."""
    win_rate: float
    win_low: float
    win_high: float
    lc_win_rate: float
    lc_low: float
    lc_high: float
    length_coef: float
    """phi: the judge's preference for the longer answer on the logit scale (0: no length effect)."""
    confidence: float
    interval: str
    """How the intervals were computed, in words."""

    def as_dict(self) -> dict[str, float | int | str]:
        return dict(self.__dict__)


def length_feature(delta: np.ndarray) -> np.ndarray:
    """tanh(d / sd(d)) over the last axis; 0 where every length difference is the same (sd = 0)."""
    delta = np.asarray(delta, dtype=float)
    sd = delta.std(axis=-1, ddof=1, keepdims=True) if delta.shape[-1] > 1 else np.zeros(delta.shape[:-1] + (1,))
    safe = np.where(sd > 0, sd, 1.0)
    return np.where(sd > 0, np.tanh(delta / safe), 0.0)


def fit_logistic(y: np.ndarray, x: np.ndarray, ridge: float = RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """(beta (..., k), sandwich covariance (..., k, k)) of a logistic regression of soft labels y (..., n) on x
    (..., n, k), by Newton's method on the ridge-penalised cross-entropy."""
    y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    n, k = x.shape[-2], x.shape[-1]
    beta = np.zeros(x.shape[:-2] + (k,))
    eye = np.eye(k)
    for _ in range(NEWTON_STEPS):
        p = special.expit(np.einsum("...nk,...k->...n", x, beta))
        grad = np.einsum("...nk,...n->...k", x, y - p) - ridge * beta
        hess = np.einsum("...nk,...n,...nj->...kj", x, p * (1 - p), x) + ridge * eye
        step = np.clip(np.linalg.solve(hess, grad[..., None])[..., 0], -MAX_STEP, MAX_STEP)
        beta = beta + step
        if np.max(np.abs(step), initial=0.0) < 1e-10:
            break
    p = special.expit(np.einsum("...nk,...k->...n", x, beta))
    hess = np.einsum("...nk,...n,...nj->...kj", x, p * (1 - p), x) + ridge * eye
    meat = np.einsum("...nk,...n,...nj->...kj", x, (y - p) ** 2, x)
    bread = np.linalg.inv(hess)
    return beta, bread @ meat @ bread * (n / max(n - k, 1))


def _interval(beta: np.ndarray, cov: np.ndarray, df: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """sigmoid(theta -+ t * se) for the first coefficient."""
    half = stats.t.ppf(0.5 + confidence / 2, max(df, 1)) * np.sqrt(np.maximum(cov[..., 0, 0], 0.0))
    return special.expit(beta[..., 0] - half), special.expit(beta[..., 0] + half)


def _exact(n: int, wins: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson bounds for all-or-nothing data: wins is 0 or n."""
    tail = (1 - confidence) / 2
    low = np.where(wins >= n, tail ** (1 / n), 0.0)
    high = np.where(wins >= n, 1.0, 1 - tail ** (1 / n))
    return low, high


def win_rates(y: np.ndarray, delta: np.ndarray, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Both win rates and their intervals for preferences y (..., n) and length differences delta (..., n)."""
    y, delta = np.asarray(y, dtype=float), np.asarray(delta, dtype=float)
    n = y.shape[-1]
    if n < 2:
        raise ValueError(f"win rates need at least 2 judged prompts, got {n}")
    ones = np.ones_like(y)
    raw_beta, raw_cov = fit_logistic(y, ones[..., None])
    feature = length_feature(delta)
    beta, cov = fit_logistic(y, np.stack([ones, feature], axis=-1))
    win_low, win_high = _interval(raw_beta, raw_cov, n - 1, confidence)
    lc_low, lc_high = _interval(beta, cov, n - 2, confidence)
    lc = special.expit(beta[..., 0])
    # All prompts one way: no spread to estimate a variance from, and nothing for the length term to explain.
    wins = np.round(y.sum(axis=-1), 9)
    unanimous = np.all(y == y[..., :1], axis=-1) & ((y[..., 0] == 0) | (y[..., 0] == 1))
    ex_low, ex_high = _exact(n, wins, confidence)
    raw = y.mean(axis=-1)
    return {
        "win_rate": raw,
        "win_low": np.where(unanimous, ex_low, win_low),
        "win_high": np.where(unanimous, ex_high, win_high),
        "lc_win_rate": np.where(unanimous, raw, lc),
        "lc_low": np.where(unanimous, ex_low, lc_low),
        "lc_high": np.where(unanimous, ex_high, lc_high),
        "length_coef": np.where(unanimous, 0.0, beta[..., 1]),
        "unanimous": unanimous,
    }


def summarise(y: list[float], delta: list[float], confidence: float = 0.95) -> WinRate:
    """`win_rates` for one comparison, as plain numbers."""
    out = {k: v.item() for k, v in win_rates(np.array(y), np.array(delta), confidence).items()}
    how = (
        f"every prompt went the same way: Clopper-Pearson for {len(y)} of {len(y)}"
        if out.pop("unanimous")
        else "delta method: sandwich covariance over prompts, t interval on the logit scale"
    )
    return WinRate(n=len(y), confidence=confidence, interval=how, **out)
