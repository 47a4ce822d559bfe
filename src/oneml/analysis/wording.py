"""How the guide says things: numbers, intervals, verdicts and what more evidence would cost, in one place, so
every row, table and command words the same fact the same way."""

from __future__ import annotations

import math

from oneml.analysis.metrics import Metric
from oneml.analysis.verdicts import Comparison


def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def p_is(name: str, p: float) -> str:
    """``p=0.031`` or ``p<0.0001``."""
    text = format_p(p)
    return f"{name}{text}" if text.startswith("<") else f"{name}={text}"


def signed(x: float, m: Metric) -> str:
    return format(x, "+" + m.fmt) if math.isfinite(x) else "n/a"


def interval(low: float, high: float, m: Metric) -> str:
    return f"[{signed(low, m)}, {signed(high, m)}]" if math.isfinite(low) else ""


def confidence_of(c: Comparison) -> str:
    """The confidence of the interval shown: 95% for one comparison, more when the level is shared."""
    level = 1 - c.alpha / c.family
    text = f"{level:.1%}" if level * 1000 % 10 else f"{level:.0%}"
    return text.replace(".0%", "%")


def comparison(c: Comparison, m: Metric) -> str:
    """``lora: inconclusive, −0.0043 [−0.010, +0.019] (95% CI, paired t, n=2)``."""
    if not c.tested:
        return f"{c.candidate}: {c.verdict} ({c.note})"
    head = f"{c.candidate}: {c.verdict}, {signed(c.diff, m)} {interval(c.ci_low, c.ci_high, m)}"
    detail = f"{confidence_of(c)} CI, {c.test}, n={c.n}"
    return f"{head} ({detail}" + (f"; {c.note})" if c.note else ")")


def duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds <= 0:
        return ""
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def more_seeds(seeds: int | None, cost_seconds: float | None, unknown: str) -> str:
    """``about 9 seeds per configuration would decide it (~40 min here)`` or why no number can be given."""
    if seeds is None:
        return unknown
    cost = duration(cost_seconds or math.nan)
    return f"about {seeds} seeds per configuration would decide it" + (f" ({cost} more here)" if cost else "")
