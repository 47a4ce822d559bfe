"""Convergence as time to event, and a mean training loss that does not depend on how often a run logged.

**Time to event.** "How fast does a configuration reach the loss threshold" is a question about the time to an
event (``steps_to_threshold`` / ``seconds_to_threshold``, logged by train/monitors.py ``StepsToThreshold``),
and a run that never reaches the threshold carries information too: it needed *more* than its budget. Dropping
such runs (or ranking only configurations that reached the threshold in every seed) rewards the configuration
that reached it once, quickly, out of six tries. Survival analysis uses both kinds of run: a run that did not
reach the threshold is *right-censored* at the end of its training (``steps``, i.e. ``train.max_steps``), which
says "not by then" and nothing more. The summaries are

- the Kaplan-Meier median time with a confidence interval (Kaplan & Meier 1958; the interval by inverting
  pointwise log-log bands of the survival curve, Brookmeyer & Crowley 1982, as R's survival and lifelines
  do). When fewer than half of the runs reach the threshold the median is *not reached*, represented as
  ``math.inf``: slower than the budget, not missing;
- the log-rank test of two configurations (Mantel 1966), by default from its exact permutation distribution:
  the normal approximation (``scipy.stats.logrank``) rejects a true null 6-10% of the time at 3 to 6 runs per
  configuration (nominal 5%), while the exact test holds its level, and says by its smallest attainable
  p-value (``logrank_floor``) when so few runs cannot decide at all;
- the restricted mean time to threshold up to a horizon tau (RMST: the area under the Kaplan-Meier curve on
  [0, tau]; Royston & Parmar 2013, BMC Med Res Methodol 13:152). Unlike the median it is defined however few
  runs reach the threshold, and it is on the scale of steps (a run that never got there counts as tau), so it
  is what a score can use. With censoring only at the end of training (tau <= max_steps) it equals the plain
  mean of min(time, tau).

The event time is the first *logged* step whose window-mean loss is at or below the threshold, so it is
known only up to the logging interval (an upper bound): compare configurations logged at the same interval.
How runs that did not finish are read is documented at ``threshold_events``.

**Mean training loss.** The Trainer's logged ``loss`` at step s is the mean per-step loss over the window
(previous logged step, s]. A trapezoid over the logged points (``results.loss_auc``) weights those windows
by where the points fall, so two identical runs logged every 2 and every 3 steps get different numbers.
``mean_train_loss`` instead weights each logged value by the number of steps its window holds: the exact
mean per-step loss over steps 1..horizon, whatever the logging interval, compared at one ``common_horizon``.

Torch-free (analysis/ never imports torch); scipy >= 1.15 for ``stats.ecdf`` on ``CensoredData`` and
``stats.logrank``.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from oneml.analysis.results import RunData
from oneml.tracking import tags as tag

EVENT_METRICS = {"steps": "steps_to_threshold", "seconds": "seconds_to_threshold"}
"""The metric that records the event, by time scale."""
FOLLOW_UP_METRICS = {"steps": ("steps",), "seconds": ("train_wall_seconds", "train_seconds")}
"""Where a finished run's follow-up (its censoring time) is read, in order of preference. Wall seconds first:
``seconds_to_threshold`` is wall time too (``train_seconds`` leaves out evaluation)."""
THRESHOLD_PARAM = "train.loss_threshold"
MAX_STEPS_PARAM = "train.max_steps"
# runner._record_failure writes "<exception class>: <reason>"; a divergence raises train.monitors.TrainingDiverged
# (not imported: analysis/ stays torch-free), and its reasons and an interrupt's say "at step N".
_DIVERGED = "TrainingDiverged:"
_AT_STEP = re.compile(r"\bat step (\d+)\b")
_TOL = 1e-9  # survival products such as 5/6 * 4/5 * 3/4 are 0.5 only up to rounding


@dataclass(frozen=True)
class Event:
    """One run's time to the threshold: ``reached`` False means right-censored (not reached by ``time``)."""

    time: float
    reached: bool


def threshold_set(runs: Iterable[RunData]) -> bool:
    """Whether any of the runs trained with a loss threshold (the param, or the metric it produces)."""
    return any(
        r.params.get(THRESHOLD_PARAM, "None") not in ("", "None") or EVENT_METRICS["steps"] in r.metrics for r in runs
    )


def threshold_events(runs: list[RunData], key: str = "steps") -> list[Event] | None:
    """Each run's steps (``key="steps"``) or wall seconds (``key="seconds"``) to the loss threshold.

    - A run that logged the event metric reached the threshold at that time, whatever its status.
    - A finished run that did not is censored at its follow-up: the ``steps`` metric, else ``train.max_steps``
      (seconds: ``train_wall_seconds``, else ``train_seconds``).
    - A diverged run (failed with ``TrainingDiverged``) will never reach it: steps are censored at
      ``train.max_steps`` ("not within the budget", where its finished seeds are censored too); for seconds,
      whose budget is unknown, at the longest time among the other runs, a finite stand-in for "never" that
      keeps it at risk over the whole observed range. Dropping it would make divergence look fast.
    - Any other unfinished run (a crash, an interrupt, a pruned rung) is censored where it stopped, if known:
      its ``steps`` metric, the last step of its training-loss history, or "at step N" in its failure reason;
      else it is left out (steps only: its seconds are never known). Censoring there assumes the stop says
      nothing about its convergence, which holds for an infrastructure failure but not for pruning by halving
      (it pruned the slow-looking ones): the caller says so where halving ran.

    None when the runs did not train with a threshold, or (seconds) when a run that reached it has no
    ``seconds_to_threshold`` (recorded before that metric existed): leaving out only those would bias the
    sample towards the slow runs. Raises ValueError when the runs used different thresholds (their times
    measure different things).
    """
    if key not in EVENT_METRICS:
        raise ValueError(f"key: must be one of {', '.join(EVENT_METRICS)}, got {key!r}")
    if not threshold_set(runs):
        return None
    thresholds = {r.params[THRESHOLD_PARAM] for r in runs if r.params.get(THRESHOLD_PARAM, "None") != "None"}
    if len(thresholds) > 1:
        raise ValueError(f"runs: times to different loss thresholds are not comparable, got {sorted(thresholds)}")
    if key == "seconds" and any(
        EVENT_METRICS["steps"] in r.metrics and EVENT_METRICS["seconds"] not in r.metrics for r in runs
    ):
        return None
    events, diverged = [], 0
    for run in runs:
        if _diverged(run) and EVENT_METRICS[key] not in run.metrics and key == "seconds":
            diverged += 1  # placed once the longest time among the others is known
            continue
        event = _event(run, key)
        if event is not None:
            events.append(event)
    if diverged and events:
        longest = max(e.time for e in events)
        events += [Event(longest, False)] * diverged
    return events


def _event(run: RunData, key: str) -> Event | None:
    metric = EVENT_METRICS[key]
    if metric in run.metrics:
        return Event(float(run.metrics[metric]), True)
    if run.analysed:
        end = _first_metric(run, FOLLOW_UP_METRICS[key])
        if end is None and key == "steps":
            end = _param_float(run, MAX_STEPS_PARAM)
        return None if end is None else Event(end, False)
    if key == "seconds":
        return None  # an unfinished run records no wall time
    if _diverged(run):
        budget = _param_float(run, MAX_STEPS_PARAM)
        return None if budget is None else Event(budget, False)
    stopped = _stopped_at(run)
    return None if stopped is None else Event(stopped, False)


def _diverged(run: RunData) -> bool:
    return not run.analysed and run.tags.get(tag.FAILURE, "").startswith(_DIVERGED)


def _stopped_at(run: RunData) -> float | None:
    """The last step an unfinished run is known to have trained."""
    if "steps" in run.metrics:
        return float(run.metrics["steps"])
    history = run.histories.get("train_loss")
    if history:
        return float(max(step for step, _ in history))
    match = _AT_STEP.search(run.tags.get(tag.FAILURE, ""))
    return float(match.group(1)) if match else None


def _first_metric(run: RunData, keys: Sequence[str]) -> float | None:
    return next((float(run.metrics[k]) for k in keys if k in run.metrics), None)


def _param_float(run: RunData, key: str) -> float | None:
    try:
        return float(run.params[key])
    except (KeyError, ValueError):
        return None


def _censored(events: Sequence[Event]) -> stats.CensoredData:
    if not events:
        raise ValueError("events: no runs to summarise")
    return stats.CensoredData(
        uncensored=[e.time for e in events if e.reached], right=[e.time for e in events if not e.reached]
    )


def _survival(events: Sequence[Event]):
    """The Kaplan-Meier survival curve: ``quantiles`` (the distinct times) and ``probabilities`` (S just after)."""
    return stats.ecdf(_censored(events)).sf


@dataclass(frozen=True)
class MedianTime:
    """The Kaplan-Meier median time to the threshold with its confidence interval.

    ``median`` is ``math.inf`` when the threshold is *not reached* by half of the runs (the curve never drops to
    0.5 within the follow-up): slower than the budget, which is a result, not missing data. ``high`` is
    ``math.inf`` when the upper band never drops to 0.5 (the data cannot bound the median from above).
    """

    median: float
    low: float
    high: float
    n: int
    reached: int
    confidence: float

    @property
    def not_reached(self) -> bool:
        return math.isinf(self.median)


def km_median(events: Sequence[Event], confidence: float = 0.95) -> MedianTime:
    """Kaplan-Meier median (the first time the survival curve is at or below 0.5) with a ``confidence`` interval.

    Where the curve is exactly 0.5 over an interval the median is that interval's midpoint (R's survival
    convention), so with no censoring it is the sample median. The interval is the set of times whose pointwise
    log-log band contains 0.5 (Brookmeyer & Crowley 1982); at 3 to 6 runs it is wide, which is the honest answer.
    """
    sf = _survival(events)
    times, surv = sf.quantiles, sf.probabilities
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the log-log band is undefined where S is 0 or 1
        band = sf.confidence_interval(confidence, method="log-log")
    # Where the band is undefined (S = 0 or 1) it collapses onto the estimate.
    low_band = np.where(np.isnan(band.low.probabilities), surv, band.low.probabilities)
    high_band = np.where(np.isnan(band.high.probabilities), surv, band.high.probabilities)
    return MedianTime(
        median=_median(times, surv),
        low=_first_at_or_below(times, low_band),
        high=_first_at_or_below(times, high_band),
        n=len(events),
        reached=sum(e.reached for e in events),
        confidence=confidence,
    )


def _first_at_or_below(times: np.ndarray, surv: np.ndarray, level: float = 0.5) -> float:
    below = np.flatnonzero(surv <= level + _TOL)
    return float(times[below[0]]) if below.size else math.inf


def _median(times: np.ndarray, surv: np.ndarray) -> float:
    first = _first_at_or_below(times, surv)
    if math.isinf(first) or abs(surv[times == first][0] - 0.5) > _TOL:
        return first
    later = np.flatnonzero(surv < 0.5 - _TOL)
    return (first + float(times[later[0]])) / 2 if later.size else first


def logrank(a: Sequence[Event], b: Sequence[Event], method: str = "exact") -> float:
    """Two-sided log-rank p-value for "the two configurations reach the threshold at the same rate".

    ``method="exact"`` (the default) is the permutation distribution of the log-rank statistic, exact at the
    small n of a study: every split of the pooled runs into groups of these sizes when there are at most
    ``EXACT_LIMIT`` of them, else ``PERMUTATIONS`` seeded random splits. It assumes the two configurations
    share one censoring scheme (the same ``train.max_steps``), as a study's do. ``"asymptotic"`` is
    ``scipy.stats.logrank`` (normal approximation), measured anti-conservative at 3 to 6 runs per configuration
    (tests/analysis/test_survival.py). At 3 + 3 runs no p-value below 0.1 exists (``logrank_floor``).

    NaN when no run of either reached the threshold (nothing to compare).
    """
    if not a or not b:
        raise ValueError("logrank: both configurations need at least one run")
    if method not in ("exact", "asymptotic"):
        raise ValueError(f"method: must be exact or asymptotic, got {method!r}")
    if not any(e.reached for e in [*a, *b]):
        return math.nan
    if method == "exact":
        return _permutation_logrank(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a zero variance (events only when one run is at risk)
        p = float(stats.logrank(_censored(a), _censored(b)).pvalue)
    return p if math.isfinite(p) else math.nan


EXACT_LIMIT = 20_000
"""The most group splits ``logrank`` enumerates (8 + 8 runs: 12,870); beyond, it samples ``PERMUTATIONS``."""
PERMUTATIONS = 20_000


def logrank_scores(events: Sequence[Event]) -> np.ndarray:
    """Each run's log-rank score in the pooled sample: reached (1 or 0) minus the Nelson-Aalen cumulative hazard
    at its time. The sum over one group is the log-rank numerator, observed minus expected events (Peto & Peto
    1972); a run censored at an event time is at risk at it, as in ``scipy.stats.logrank``."""
    times = np.array([e.time for e in events], dtype=float)
    reached = np.array([e.reached for e in events], dtype=bool)
    distinct = np.unique(times[reached])
    at_risk = (times[None, :] >= distinct[:, None]).sum(axis=1)  # (J,)
    deaths = ((times[None, :] == distinct[:, None]) & reached[None, :]).sum(axis=1)  # (J,)
    hazard = np.cumsum(deaths / at_risk)  # (J,), H(t) just after each distinct event time
    index = np.searchsorted(distinct, times, side="right") - 1  # the last event time at or before each run's
    return reached - np.where(index >= 0, hazard[np.maximum(index, 0)], 0.0)


def _permutation_logrank(a: Sequence[Event], b: Sequence[Event]) -> float:
    scores = logrank_scores([*a, *b])
    total, size = len(scores), len(a)
    if math.comb(total, size) <= EXACT_LIMIT:
        splits = np.array(list(itertools.combinations(range(total), size)))  # (P, size)
    else:
        rng = np.random.default_rng(0)  # seeded: one study gives one p-value
        splits = rng.permuted(np.tile(np.arange(total), (PERMUTATIONS, 1)), axis=1)[:, :size]
    observed = abs(scores[:size].sum())
    extreme = np.abs(scores[splits].sum(axis=1)) >= observed - _TOL * max(1.0, observed)
    if math.comb(total, size) <= EXACT_LIMIT:
        return float(extreme.mean())  # the observed split is one of those enumerated
    return float((1 + extreme.sum()) / (1 + PERMUTATIONS))


def logrank_floor(n_a: int, n_b: int) -> float:
    """The smallest p-value the exact log-rank test can give with ``n_a`` and ``n_b`` runs (ties only raise it):
    2 / C(n_a + n_b, n_a) for equal sizes (a split and its mirror are equally extreme), else 1 / C. Below alpha
    means the test can decide at these sizes at all: 3 + 3 runs give 0.1, 4 + 4 give 0.029."""
    return (2.0 if n_a == n_b else 1.0) / math.comb(n_a + n_b, n_a)


def rmst(events: Sequence[Event], horizon: float) -> float:
    """Restricted mean time to the threshold up to ``horizon``: the area under the Kaplan-Meier curve on [0, horizon].

    A run that has not reached the threshold by ``horizon`` counts as ``horizon``. Raises ValueError when
    ``horizon`` lies beyond the follow-up (the last time is censored and the curve is unknown after it): use
    ``follow_up`` of the samples compared, so that they share one horizon.
    """
    if horizon <= 0:
        raise ValueError(f"horizon: must be positive, got {horizon}")
    sf = _survival(events)
    times, surv = sf.quantiles, sf.probabilities
    if horizon > times[-1] + _TOL and surv[-1] > _TOL:
        raise ValueError(f"horizon: {horizon:g} is beyond the follow-up ({times[-1]:g}); the curve is unknown there")
    starts = np.concatenate(([0.0], times))  # S is 1 before the first time, surv[i] from times[i] on
    levels = np.concatenate(([1.0], surv))
    ends = np.concatenate((times, [math.inf]))
    widths = np.clip(np.minimum(ends, horizon) - starts, 0.0, None)
    return float(np.sum(levels * widths))


def follow_up(*samples: Sequence[Event]) -> float:
    """The longest horizon on which every sample's Kaplan-Meier curve is known, for ``rmst`` of them all.

    A sample's curve is known up to its last time when that time is censored (runs still short of the
    threshold), and beyond it when every run there reached the threshold (the curve is 0 from then on); the
    horizon is the smallest of those, or the largest time of all when no sample ends censored.
    """
    if not samples or not all(samples):
        raise ValueError("follow_up: every sample needs at least one run")
    known = [_known_until(sample) for sample in samples]
    return min(known) if not all(math.isinf(k) for k in known) else max(e.time for s in samples for e in s)


def _known_until(sample: Sequence[Event]) -> float:
    last = max(e.time for e in sample)
    return math.inf if all(e.reached for e in sample if e.time == last) else last


def mean_train_loss(history: Sequence[tuple[int, float]], horizon: int) -> float | None:
    """The mean per-step training loss over steps 1..``horizon``, the same for any logging interval.

    ``history`` is a run's logged ``train_loss`` as ``(step, value)``; each value is the mean loss of the steps
    in its window (previous logged step, step], the first window starting at step 0 (the Trainer resets its
    running sum at every log). The mean is sum(value * steps in window) / horizon, exact when ``horizon`` is a
    logged step. When a window straddles ``horizon`` its mean stands for its steps up to the horizon: the one
    approximation, within a single window. Points at step 0 or repeated steps hold no step and are skipped.

    None when the history does not reach ``horizon`` (those steps' losses are unknown) or holds a non-finite
    value before it (a diverged run has no mean loss; its failure is counted elsewhere).
    """
    if horizon < 1:
        raise ValueError(f"horizon: must be a positive step, got {horizon}")
    total, previous = 0.0, 0
    for step, value in sorted(history):
        if step <= previous:
            continue
        if not math.isfinite(value):
            return None
        end = min(step, horizon)
        total += value * (end - previous)
        previous = end
        if step >= horizon:
            return total / horizon
    return None


def common_horizon(histories: Iterable[Sequence[tuple[int, float]]]) -> int:
    """The largest step every run logged up to: the smallest last logged step (0 when none logged anything).

    Compare the configurations of one group at this one horizon, so that a run that trained longer (or logged
    its last window later) is not averaged over a different stretch of training. Empty histories are skipped:
    such a run has no mean loss at any horizon.
    """
    lasts = [max(step for step, _ in history) for history in histories if history]
    return int(min(lasts)) if lasts else 0
