"""What early stopping did to a study's runs, for the report: how many stopped before their budget, where, and
what that means for the numbers beside them (train/early_stopping.py writes the tags and metrics read here)."""

from __future__ import annotations

from oneml.analysis.results import StudyResults
from oneml.tracking import tags as tag


def early_stopping_note(study: StudyResults) -> str | None:
    """One line when any analysed run trained with early stopping; None otherwise."""
    runs = [r for r in study.runs if tag.STOPPED_EARLY in r.tags]
    if not runs:
        return None
    stopped = [r for r in runs if r.tags[tag.STOPPED_EARLY] == "true"]
    steps = sorted(int(r.metrics["steps"]) for r in runs if "steps" in r.metrics)
    best = sorted(int(r.metrics["best_step"]) for r in runs if "best_step" in r.metrics)
    ran = f"steps run {steps[0]}-{steps[-1]}" if steps and steps[0] != steps[-1] else f"steps run {steps[0]}"
    where = f"best steps {best[0]}-{best[-1]}" if best and best[0] != best[-1] else f"best step {best[0]}"
    return (
        f"early stopping ended {len(stopped)} of {len(runs)} run(s) before their budget ({ran}; {where}): each run's "
        "eval_* and test_* are those of its best evaluated step, chosen on the validation rows; time and compute per "
        "run count the steps actually run; convergence compares runs up to the earliest last step, and a run that "
        "stopped before reaching the loss threshold is censored where it stopped"
    )
