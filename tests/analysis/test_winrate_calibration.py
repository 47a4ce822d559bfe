"""Calibration of the win rates by simulation: a judge with a known true preference, a known length bias, a
position bias and ties; thousands of data sets fitted at once (seeded, vectorised, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from oneml.analysis.winrate import fit_logistic, length_feature, summarise, win_rates

R = 2000  # simulated comparisons per case: the coverage estimate's sd is about 0.005


def simulate(n, theta, phi, *, mean_delta=0.0, position=0.0, tie=0.0, seed=0):
    """Preferences y (R, n) from a judge that sees two orders of each pair: logit P(model wins) = theta +
    phi * tanh(d / sd(d)) +- position (the first position's advantage), a tie with probability ``tie``."""
    rng = np.random.default_rng(seed)
    delta = rng.normal(mean_delta, 300.0, (R, n))
    eta = theta + phi * length_feature(delta)
    orders = []
    for side in (+1, -1):
        won = (rng.random((R, n)) < expit(eta + side * position)).astype(float)
        orders.append(np.where(rng.random((R, n)) < tie, 0.5, won))
    return (orders[0] + orders[1]) / 2, delta


def coverage(out, truth, low="lc_low", high="lc_high"):
    return float(np.mean((out[low] <= truth) & (truth <= out[high])))


@pytest.mark.parametrize(
    ("n", "theta", "phi", "mean_delta"),
    [(50, 0.0, 0.0, 0.0), (100, 1.0, 0.8, 0.0), (50, -1.5, 0.8, 200.0), (100, 2.5, 0.5, 0.0)],
)
def test_lc_interval_covers_the_known_true_rate(n, theta, phi, mean_delta):
    y, delta = simulate(n, theta, phi, mean_delta=mean_delta, seed=n)
    out = win_rates(y, delta)
    assert 0.93 <= coverage(out, expit(theta)) <= 0.975
    assert abs(out["lc_win_rate"].mean() - expit(theta)) < 0.01  # unbiased to within a point


def test_length_correction_removes_a_pure_length_bias():
    # No real preference (theta = 0); the judge likes longer answers (phi = 1.5) and the model writes longer ones.
    y, delta = simulate(100, 0.0, 1.5, mean_delta=300.0, seed=7)
    out = win_rates(y, delta)
    assert out["win_rate"].mean() > 0.65  # the raw win rate is fooled by length ...
    assert coverage(out, 0.5, "win_low", "win_high") < 0.05
    assert abs(out["lc_win_rate"].mean() - 0.5) < 0.01  # ... the length-controlled one is not
    assert 0.93 <= coverage(out, 0.5) <= 0.975
    assert out["length_coef"].mean() == pytest.approx(1.5, abs=0.1)


def test_position_bias_and_ties_leave_the_null_calibrated():
    # A judge that strongly prefers the first position and ties 30% of the time, comparing equals: both orders
    # cancel the position; the false "better/worse" rate (0.5 outside the interval) stays at 5%.
    y, delta = simulate(60, 0.0, 0.0, position=1.5, tie=0.3, seed=3)
    out = win_rates(y, delta)
    assert 0.93 <= coverage(out, 0.5) <= 0.975
    assert 0.93 <= coverage(out, 0.5, "win_low", "win_high") <= 0.975


def test_power_a_real_preference_is_found():
    y, delta = simulate(200, 0.6, 0.8, mean_delta=-100.0, seed=11)  # shorter answers, yet preferred
    out = win_rates(y, delta)
    assert np.mean(out["lc_low"] > 0.5) > 0.9


def test_fit_matches_a_direct_maximum_likelihood_fit():
    from scipy.optimize import minimize

    rng = np.random.default_rng(5)
    x = np.stack([np.ones(40), rng.normal(size=40)], axis=-1)
    y = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=40)

    def loss(b):
        p = expit(x @ b)
        return -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)) + 0.5 * 0.01 * b @ b

    beta, cov = fit_logistic(y, x)
    assert beta == pytest.approx(minimize(loss, np.zeros(2)).x, abs=1e-4)
    assert np.all(np.linalg.eigvalsh(cov) > 0)


def test_the_plain_win_rate_is_the_mean_and_unanimous_data_gets_an_exact_interval():
    mixed = summarise([1.0, 0.5, 0.0, 1.0, 0.75], [10, -5, 3, 40, 0])
    assert mixed.win_rate == pytest.approx(0.65) and mixed.win_low < 0.65 < mixed.win_high
    allwins = summarise([1.0] * 10, [5.0] * 5 + [-5.0] * 5)
    assert allwins.win_rate == allwins.lc_win_rate == 1.0
    assert allwins.win_low == pytest.approx(0.025 ** (1 / 10)) and allwins.win_high == 1.0
    assert "Clopper-Pearson" in allwins.interval
    same_length = summarise([1.0, 0.0, 0.5, 1.0], [7, 7, 7, 7])  # sd 0: no length term to fit
    assert same_length.length_coef == pytest.approx(0.0, abs=1e-6)
    assert same_length.lc_win_rate == pytest.approx(same_length.win_rate, abs=5e-3)  # the ridge, at n = 4
