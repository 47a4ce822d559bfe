"""The decision rules that need more than the quality verdicts: stability (failures, then spread), convergence
(time to a loss threshold, or the training-loss area) and the starting point's scores. See decision.py for
what each row means; this module holds how their own tests are run."""

from __future__ import annotations

import math

from oneml.analysis import wording
from oneml.analysis.decision import (
    JUDGED,
    PREFERENCE,
    Analysis,
    Recommendation,
    blocking,
    complexity,
    loss_defined_by,
    made,
    none,
    quality_status,
    show,
)
from oneml.analysis.metrics import metric, test_key
from oneml.analysis.verdicts import IDENTICAL, Comparison, level, rank

SPREAD_MIN_SEEDS = 5
"""No spread test below this many seeds per configuration: see stability.py for why (measured)."""


def _stats_of(a: Analysis, label: str):
    from oneml.analysis.stability import failure_rate, identical, sd_interval

    values = [v for v in a.configs[label].values(a.options.metric).values() if math.isfinite(v)]
    rate = failure_rate(*a.failures(label))
    same = len(values) >= 2 and identical(values)
    sd = sd_interval(values) if len(values) >= 2 and not same else (math.nan, math.nan, math.nan)
    return values, rate, same, sd


def _describe(a: Analysis, label: str) -> str:
    values, rate, same, (sd, low, high) = _stats_of(a, label)
    failed = f"{rate.k} of {rate.n} runs failed (95% CI {rate.low:.0%}–{rate.high:.0%})"
    if same:
        return f"{failed}; {IDENTICAL}"
    if not math.isfinite(sd):
        return f"{failed}; spread unknown (n={len(values)})"
    return f"{failed}; sd {a.quality.show(sd)} (95% CI {a.quality.show(low)}–{a.quality.show(high)}, n={len(values)})"


def stability(a: Analysis) -> Recommendation:
    from oneml.analysis.stability import failure_test, seeds_for_spread, spread_test

    pool = list(a.contenders)
    info = {label: _stats_of(a, label) for label in pool}

    def order(label: str) -> tuple[float, float, int]:
        _, rate, same, (sd, _, _) = info[label]
        spread = sd if math.isfinite(sd) and not same else math.inf
        return (rate.rate if math.isfinite(rate.rate) else 1.0, spread, complexity(a.configs[label]))

    pool.sort(key=order)
    winner = pool[0]
    text = f"{_describe(a, winner)}; {quality_status(a, winner)}"
    if len(pool) == 1:
        text = f"the only contender: {text}"
        return made(a, "stability", winner, _numbers(a, winner), text, blocking(a))
    per_pair = level(a.options.alpha, len(pool) * (len(pool) - 1) // 2)
    open_, seeds, notes = [], [], []
    wv, wrate, _, (wsd, _, _) = info[winner]
    for other in pool[1:]:
        ov, orate, _, (osd, _, _) = info[other]
        p_fail = failure_test(wrate.k, wrate.n, orate.k, orate.n)
        spread = spread_test(wv, ov)
        if (p_fail < per_pair and wrate.rate < orate.rate) or (spread.p < per_pair and wsd < osd):
            notes.append(f"{other}: {_describe(a, other)} (separated)")
            continue
        open_.append(other)
        notes.append(f"{other}: {_describe(a, other)} (failure test {wording.p_is('p', p_fail)}; {_spread(spread)})")
        ratio = osd / wsd if wsd > 0 and math.isfinite(osd) else math.nan
        more = seeds_for_spread(ratio, per_pair) if math.isfinite(ratio) else None
        seeds.append(max(SPREAD_MIN_SEEDS, more) if more is not None else None)
    text += "; " + "; ".join(notes)
    extra = (tuple(open_), None if any(s is None for s in seeds) else max(seeds, default=None))
    return made(a, "stability", winner, _numbers(a, winner), text, blocking(a), extra)


def _spread(test) -> str:
    return f"spread test {wording.p_is('p', test.p)}" if math.isfinite(test.p) else (test.note or "no spread test")


def _numbers(a: Analysis, label: str) -> str:
    values, rate, same, (sd, _, _) = _stats_of(a, label)
    fail = f"failed {rate.k}/{rate.n}"
    s = a.summaries[label][a.options.metric]
    cv = f", CV {s.cv:.2%}" if s.n > 1 and math.isfinite(s.cv) and not same else ""
    return (
        f"{fail}; std {a.quality.show(sd)}{cv} over {len(values)} seeds"
        if math.isfinite(sd)
        else f"{fail}; n={len(values)}"
    )


def convergence(a: Analysis) -> Recommendation:
    from oneml.analysis.survival import threshold_set

    if defined := loss_defined_by(list(a.configs.values())):
        return none(
            "convergence",
            f"not compared: the training loss is defined by {', '.join(defined)}, which differs between the "
            "configurations, so their losses (and thresholds on them) do not measure the same thing",
        )

    timed = [label for label, c in a.configs.items() if threshold_set(c.runs + c.failed)]
    if timed:
        return _time_to_threshold(a, timed)
    return _loss_area(a)


def _time_to_threshold(a: Analysis, labels: list[str]) -> Recommendation:
    from oneml.analysis.survival import follow_up, km_median, logrank, rmst, threshold_events

    events = {label: threshold_events(a.configs[label].runs + a.configs[label].failed) or [] for label in labels}
    events = {label: e for label, e in events.items() if e}
    if not events:
        return none("convergence", "no run with a loss threshold has a usable step count")
    horizon = follow_up(*events.values())
    medians = {label: km_median(e) for label, e in events.items()}
    areas = {label: rmst(e, horizon) for label, e in events.items()}
    order = sorted(events, key=lambda label: (medians[label].median, areas[label]))
    winner = order[0]
    per_pair = level(a.options.alpha, len(order) * (len(order) - 1) // 2)
    open_, seeds, notes = [], [], []
    for other in order[1:]:
        p = logrank(events[winner], events[other])
        notes.append(f"{other}: {_median_text(medians[other])} (log-rank {wording.p_is('p', p)})")
        if not (p < per_pair):
            open_.append(other)
            seeds.append(_logrank_seeds(events[winner], events[other], areas[winner], areas[other], per_pair))
    m = medians[winner]
    numbers = f"{_median_text(m)}; restricted mean {areas[winner]:,.0f} steps (to step {horizon:,.0f})"
    seconds = threshold_events(a.configs[winner].runs, key="seconds")
    if seconds:
        numbers += f"; {_median_text(km_median(seconds), 'seconds')}"
    text = "; ".join(notes) + f"; quality: {_quality_word(a, winner)}"
    extra = (tuple(open_), None if any(s is None for s in seeds) else max(seeds, default=None))
    return made(a, "convergence", winner, numbers, text or "only one configuration", [], extra)


def _median_text(m, unit: str = "steps") -> str:
    reached = f"{m.reached} of {m.n} reached the threshold"
    if not math.isfinite(m.median):
        return f"median {unit} to threshold not reached ({reached})"
    return f"median {m.median:,.0f} {unit} to threshold ({reached})"


def _logrank_seeds(a_events, b_events, area_a: float, area_b: float, per_pair: float) -> int | None:
    """Schoenfeld's approximation: 4 (z_{1-a/2} + z_{0.8})^2 / log(HR)^2 events in all, with the hazard ratio
    taken as the ratio of restricted mean times, spread over the share of runs that reach the threshold; and
    never fewer seeds than the exact test needs to reach the level at all (3 + 3 seeds cannot give p < 0.05)."""
    from scipy import stats

    from oneml.analysis.survival import logrank_floor

    if not (area_a > 0 and area_b > 0) or abs(math.log(area_b / area_a)) < 1e-9:
        return None
    events = 4 * (stats.norm.ppf(1 - per_pair / 2) + stats.norm.ppf(0.8)) ** 2 / math.log(area_b / area_a) ** 2
    share = sum(e.reached for e in [*a_events, *b_events]) / max(1, len(a_events) + len(b_events))
    if share <= 0:
        return None
    floor = next((n for n in range(2, 1001) if logrank_floor(n, n) < per_pair), 1001)
    seeds = max(math.ceil(events / (2 * share)), floor)
    return seeds if seeds <= 1000 else None


def _quality_word(a: Analysis, label: str) -> str:
    verdict = a.verdict(label)
    if verdict in ("best", "equivalent"):
        return "as good as the best" if verdict == "equivalent" else "the best"
    if verdict == "worse":
        c = a.comparison(label)
        return "worse than the best: " + wording.comparison(c, a.quality)  # type: ignore[arg-type]
    if verdict == "inconclusive":
        return "undecided against the best"
    return "no finished run"


def loss_areas(a: Analysis) -> dict[str, dict[str, float]]:
    """Per configuration, ``{seed: mean per-step training loss}`` up to the step every run of the group logged."""
    from oneml.analysis.survival import common_horizon, mean_train_loss

    histories = [r.histories["train_loss"] for c in a.configs.values() for r in c.runs if r.histories.get("train_loss")]
    if not histories:
        return {}
    horizon = common_horizon(histories)
    out: dict[str, dict[str, float]] = {}
    for label, c in a.configs.items():
        values = {
            r.seed: mean_train_loss(r.histories["train_loss"], horizon) for r in c.runs if r.histories.get("train_loss")
        }
        if clean := {s: v for s, v in values.items() if v is not None}:
            out[label] = clean
    return out


def _loss_area(a: Analysis) -> Recommendation:
    values = loss_areas(a)
    if not values:
        return none("convergence", "no run recorded a loss threshold or a train-loss history")
    m = metric("train_loss_auc")
    r = rank(m.key, False, values, a.margin, a.options.alpha)
    others = "; ".join(wording.comparison(c, m) for c in r.comparisons) or "only one configuration"
    s = _mean_sd(values[r.best])
    numbers = f"mean train loss {s} (per step, common step grid)"
    text = f"no loss threshold set: mean training loss over the run; {others}; quality: {_quality_word(a, r.best)}"
    blockers: list[Comparison] = [c for c in r.comparisons if c.verdict == "inconclusive"]
    return made(a, "convergence", r.best, numbers, text, blockers)


def _mean_sd(values: dict[str, float]) -> str:
    import numpy as np

    x = np.array(list(values.values()))
    return f"{x.mean():.4f}" + (f" ± {x.std(ddof=1):.4f}" if len(x) > 1 else " (n=1)")


def _ratio(value: float | None, best: float | None, higher: bool) -> float:
    if value is None or best is None or not (math.isfinite(value) and math.isfinite(best)):
        return 0.0
    if value == best:
        return 1.0
    if higher:
        return max(0.0, value / best) if best > 0 else 0.0
    return max(0.0, best / value) if value > 0 else 0.0


def _criteria(a: Analysis, pool: list[str]) -> dict[str, dict[str, float | None]]:
    """Raw value per criterion and contender; the direction is in `_HIGHER`."""
    from oneml.analysis.stability import failure_rate
    from oneml.analysis.survival import threshold_set

    areas = {}
    if any(threshold_set(a.configs[label].runs + a.configs[label].failed) for label in pool):
        from oneml.analysis.survival import follow_up, rmst, threshold_events

        events = {label: threshold_events(a.configs[label].runs + a.configs[label].failed) for label in pool}
        known = [es for es in events.values() if es]
        horizon = follow_up(*known) if known else 0.0
        areas = {label: rmst(es, horizon) if es and horizon > 0 else None for label, es in events.items()}
    else:
        loss = loss_areas(a)
        areas = {label: (sum(v.values()) / len(v) if (v := loss.get(label)) else None) for label in pool}
    return {
        "quality": {label: 1.0 for label in pool},  # every contender is as good as the best, by the one notion
        "stability": {label: 1.0 - failure_rate(*a.failures(label)).rate for label in pool},
        "simplicity": {label: float(complexity(a.configs[label])) for label in pool},
        "convergence": areas,
        "memory": {label: a.mean(label, "peak_memory_mib") for label in pool},
        "speed": _speeds(a, pool),
        "preference": {label: a.mean(label, key) if (key := preference_metric(a)) else None for label in pool},
    }


def _speeds(a: Analysis, pool: list[str]) -> dict[str, float | None]:
    """tokens/s per contender; none at all when the runs mixed concurrent and solo trials (a shared GPU and shared
    cores make a concurrent run slower for reasons that are not the method's): speed is then not ranked."""
    from oneml.analysis.results import concurrency_levels

    if len(concurrency_levels([r for label in pool for r in a.configs[label].runs])) > 1:
        return {label: None for label in pool}
    return {label: a.mean(label, "tokens_per_second") for label in pool}


_HIGHER = {"quality": True, "stability": True, "simplicity": False, "convergence": False, "memory": False,
           "speed": True, "preference": True}  # fmt: skip


def scores(a: Analysis, pool: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Per contender, each criterion as a ratio of the best contender's value (1 = best, 0 = not recorded), and the
    weighted mean as 'score'. Ratios keep small gaps small: min-max scaling would stretch noise to 0..1."""
    pool = list(pool or a.contenders)
    out: dict[str, dict[str, float]] = {label: {} for label in pool}
    used: dict[str, float] = {}
    for name, raw in _criteria(a, pool).items():
        weight = float(a.options.weights.get(name, 0.0))
        known = [v for v in raw.values() if v is not None and math.isfinite(v)]
        if weight <= 0 or not known:
            continue
        used[name] = weight
        best = max(known) if _HIGHER[name] else min(known)
        for label, v in raw.items():
            out[label][name] = _ratio(v, best, _HIGHER[name])
    total = sum(used.values())
    for parts in out.values():
        parts["score"] = sum(used[k] * parts[k] for k in used) / total if total else 0.0
    return out


def preference_metric(a: Analysis) -> str | None:
    """The metric the preference row judges: a judge's LC win rate if any run recorded one (the benchmark first in
    JUDGED, then the opponent most configurations were judged against: base, then reference, then by name), else
    the preference accuracy on the test rows when the runs had a test split (like quality: the validation rows are
    the ones the study's selection read), else eval_preference_accuracy when recorded, else None."""
    recorded = {k for c in a.configs.values() for r in c.runs for k in r.metrics}
    for bench in JUDGED:
        keys = [k for k in recorded if k.startswith(f"bench/{bench}/") and k.endswith("/lc_win_rate")]
        if keys:
            return min(keys, key=lambda k: _judged_order(a, k))
    return next((k for k in (test_key(PREFERENCE), PREFERENCE) if k in recorded), None)


def _judged_order(a: Analysis, key: str) -> tuple[int, int, str]:
    opponent = key.split("/")[2]
    judged = sum(any(key in r.metrics for r in c.runs) for c in a.configs.values())
    return -judged, {"base": 0, "reference": 1}.get(opponent, 2), opponent


def preference(a: Analysis) -> Recommendation:
    key = preference_metric(a)
    if key is None:
        return none("preference", "no preference runs (no run recorded a judge's win rate or a preference accuracy)")
    values = {label: {s: v for s, v in c.values(key).items() if math.isfinite(v)} for label, c in a.configs.items()}
    m = metric(key)
    r = rank(key, m.higher_is_better, values, a.margin, a.options.alpha)
    others = "; ".join(wording.comparison(c, m) for c in r.comparisons) or "only one configuration recorded it"
    blockers = [c for c in r.comparisons if c.verdict == "inconclusive"]
    unjudged = [label for label, v in values.items() if not v]
    text = f"vs best: {others}" + (f"; not judged: {', '.join(unjudged)}" if unjudged else "")
    return made(a, "preference", r.best, show(a, r.best, key), text, blockers)
