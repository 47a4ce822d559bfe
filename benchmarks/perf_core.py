"""The harness behind benchmarks/perf.py: what a benchmark is, the registry, alternating pairs, the report."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Measure:
    value: float
    """The benchmark's metric for one run (seconds per step, tokens/s, seconds, bytes...)."""
    losses: list[float] = field(default_factory=list)
    """Losses to compare between the two sides where they compute the same thing."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Benchmark:
    name: str
    description: str
    ours: Callable[[], Measure]
    baseline: Callable[[], Measure]
    metric: str
    target: str
    """The issue's target as text, e.g. "<= 1.05"."""
    passes: Callable[[float], bool]
    same_loss: float | None = None
    """Largest relative loss difference read as "the same" (None: the two compute different things)."""
    pairs: int | None = None
    """Pairs to run when --pairs is not given (default 5)."""
    needs: Callable[[], str | None] = lambda: None
    """Returns why the benchmark cannot run here (e.g. no GPU), or None."""


BENCHMARKS: dict[str, Benchmark] = {}


def register(bench: Benchmark) -> None:
    BENCHMARKS[bench.name] = bench


def alternate(bench: Benchmark, pairs: int) -> dict[str, Any]:
    """Run ``pairs`` pairs, alternating which side goes first; the median ratio ours / baseline."""
    ours, base, ratios = [], [], []
    for i in range(pairs):
        sides = [("ours", bench.ours, ours), ("baseline", bench.baseline, base)]
        for label, run, out in sides if i % 2 == 0 else sides[::-1]:
            out.append(run())
            print(f"  pair {i + 1} {label:<9}{_fmt(out[-1].value):>14} {bench.metric}", flush=True)
        ratios.append(ours[-1].value / base[-1].value)
    ratio = statistics.median(ratios)
    result = {
        "benchmark": bench.name,
        "metric": bench.metric,
        "ours_median": statistics.median(m.value for m in ours),
        "baseline_median": statistics.median(m.value for m in base),
        "ratios": ratios,
        "median_ratio": ratio,
        "target": bench.target,
        "met": bench.passes(ratio),
        "ours_extra": ours[-1].extra,
        "baseline_extra": base[-1].extra,
    }
    numeric = [
        k
        for k in ours[-1].extra
        if all(isinstance(m.extra.get(k), int | float) and m.extra.get(k) for m in ours + base)
    ]
    result["extra_ratios"] = {
        k: statistics.median(o.extra[k] / b.extra[k] for o, b in zip(ours, base, strict=True)) for k in numeric
    }
    if bench.same_loss is not None:
        result |= _loss_check(ours, base, bench.same_loss)
    return result


def _loss_check(ours: list[Measure], base: list[Measure], tol: float) -> dict[str, Any]:
    gaps = [
        abs(a - b) / max(abs(b), 1e-12)
        for o, bl in zip(ours, base, strict=True)
        for a, b in zip(o.losses, bl.losses, strict=False)  # a side may add its eval loss; the logged ones align
    ]
    worst = max(gaps, default=float("nan"))
    return {"loss_max_rel_diff": worst, "losses_match": bool(gaps) and worst <= tol}


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.4e}"


def report(result: dict[str, Any]) -> None:
    verdict = "met" if result["met"] else "MISSED"
    line = (
        f"{result['benchmark']}: ours {_fmt(result['ours_median'])} vs baseline {_fmt(result['baseline_median'])} "
        f"{result['metric']}; median ratio {result['median_ratio']:.3f} (target {result['target']}: {verdict})"
    )
    if "losses_match" in result:
        same = "match" if result["losses_match"] else "DIFFER"
        line += f"; losses {same} (max rel diff {result['loss_max_rel_diff']:.2e})"
    others = ", ".join(f"{k} {v:.3f}" for k, v in result.get("extra_ratios", {}).items())
    if others:
        line += f"; other median ratios: {others}"
    print(line, flush=True)
