"""Group-sequential looks: the level at which a study that adds seeds until decided may judge at each look.

A sequential study (`seeds: {initial: 3, max: 10, until: decided}`) looks at its results after every round of
seeds and stops when the guide is decided. Each look is another chance of a false "better" or "worse": testing
every look at the full alpha inflates the chance of any false verdict well past alpha (the calibration test in
tests/analysis/test_alpha_spending.py measures it). The correction here is alpha spending (Lan & DeMets 1983,
"Discrete sequential boundaries for clinical trials", Biometrika 70(3)) with the O'Brien-Fleming-type spending
function

    alpha*(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t)),   0 < t <= 1,

where the information fraction t is the seeds so far over `max` (Jennison & Turnbull 2000, ch. 7). Look j of
a study judges at the level alpha*(t_j) - alpha*(t_{j-1}): the alpha this look spends. By the union bound over
looks the chance of any false verdict over the whole procedure is at most alpha*(t_last) <= alpha, whatever the
correlation between looks and whichever configurations kept getting seeds; it is conservative (the exact
group-sequential boundaries would need the joint law of the looks' statistics, which per-configuration seeds
and the selection of the best make intractable). O'Brien-Fleming spending keeps early looks strict (3 of 10
seeds: 0.00035) so that a study stopped early needs a large effect, and leaves most of alpha for the last looks.

The looks are recorded on the study's parent run (`look_tags`), so that a report of the study judges at the
level of its last look (`look_alpha`) and says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from oneml.tracking import tags as tag

SPENDING = "obrien-fleming"
MAX_TAG = tag.SEQUENTIAL_MAX
LOOKS_TAG = tag.SEQUENTIAL_LOOKS
SPENDING_TAG = tag.SEQUENTIAL_SPENDING
ALPHA_TAG = tag.SEQUENTIAL_ALPHA
STOPPED_TAG = tag.SEQUENTIAL_STOPPED
EXTENDED_TAG = tag.EXTENDED


def obrien_fleming(alpha: float, t: float) -> float:
    """alpha*(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)): the alpha spent by information fraction t (capped at 1)."""
    from scipy import stats

    if t <= 0:
        return 0.0
    return float(2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / math.sqrt(min(t, 1.0))))


SPENDING_FUNCTIONS: dict[str, Callable[[float, float], float]] = {SPENDING: obrien_fleming}
SPENDING_NAMES = {SPENDING: "O'Brien-Fleming"}


def look_share(alpha: float, looks: Sequence[int], max_seeds: int, spending: str = SPENDING) -> float:
    """The level of the last of ``looks`` (seeds per configuration at each): alpha*(t_j) - alpha*(t_{j-1})."""
    spend = SPENDING_FUNCTIONS[spending]
    now = spend(alpha, looks[-1] / max_seeds)
    before = spend(alpha, looks[-2] / max_seeds) if len(looks) > 1 else 0.0
    return max(0.0, now - before)


def remaining(alpha: float, looks: Sequence[int], max_seeds: int, spending: str = SPENDING) -> float:
    """What a last look at ``max_seeds`` would get after ``looks``: the level a plan for more seeds assumes."""
    return alpha - SPENDING_FUNCTIONS[spending](alpha, looks[-1] / max_seeds) if looks else alpha


def look_tags(looks: Sequence[int], max_seeds: int, alpha: float, stopped: str = "") -> dict[str, str]:
    """The parent run's record of the looks (rewritten whole at every look, so a resumed study sets the same)."""
    tags = {
        MAX_TAG: str(max_seeds),
        LOOKS_TAG: ",".join(str(n) for n in looks),
        SPENDING_TAG: SPENDING,
        ALPHA_TAG: f"{alpha:g}",
    }
    return tags | ({STOPPED_TAG: stopped} if stopped else {})


def recorded_looks(parent_tags: Mapping[str, str]) -> tuple[list[int], int] | None:
    """(seeds at each look, max) from a parent run's tags, or None for a study that did not look sequentially."""
    try:
        looks = [int(n) for n in parent_tags.get(LOOKS_TAG, "").split(",") if n.strip()]
        max_seeds = int(parent_tags.get(MAX_TAG, "0"))
    except ValueError:
        return None
    return (looks, max_seeds) if looks and max_seeds > 0 else None


def look_alpha(parent_tags: Mapping[str, str], alpha: float) -> tuple[float, str] | None:
    """The level of the study's last look and the sentence that states it, from its parent run's tags; None for
    a study without looks. ``alpha`` is the overall level when the study did not record one.

    A study with a fixed seed list that was extended by hand gets ``alpha`` itself, with a sentence saying that
    the extra look is not corrected for."""
    found = recorded_looks(parent_tags)
    if found is None:
        extended = parent_tags.get(EXTENDED_TAG)
        if not extended:
            return None
        return alpha, (
            f"seeds {extended.replace(',', ', ')} were added by hand (oneml study extend) after the results were "
            f"seen: these verdicts are not corrected for that extra look"
        )
    looks, max_seeds = found
    spending = parent_tags.get(SPENDING_TAG, SPENDING)
    if spending not in SPENDING_FUNCTIONS:
        return None
    overall = float(parent_tags.get(ALPHA_TAG, alpha))
    share = look_share(overall, looks, max_seeds, spending)
    most = max(1, max_seeds - looks[0] + 1)
    sentence = (
        f"group-sequential: look {len(looks)} of up to {max(most, len(looks))} (seeds {looks[0]}..{max_seeds}), "
        f"{SPENDING_NAMES[spending]} spending, this look's share of alpha {share:.2g}"
    )
    return share, sentence
