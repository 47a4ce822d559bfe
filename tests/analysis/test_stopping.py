"""The report on runs that early stopping ended: it says how many stopped and where, and the cost table shows the
steps each configuration actually ran and its best step (only where early stopping ran)."""

from __future__ import annotations

from synthetic import make_config

from oneml.analysis import DecisionOptions, analyse_study
from oneml.analysis.results import StudyResults
from oneml.analysis.stopping import early_stopping_note
from oneml.analysis.tables import cost_table

SECONDS = {"train_wall_seconds": {"0": 10.0, "1": 12.0, "2": 11.0}}


def _study(stopping: bool) -> StudyResults:
    steps = {"0": 40.0, "1": 100.0, "2": 60.0}
    extra = {"steps": steps, "best_step": {"0": 30.0, "1": 100.0, "2": 50.0}} if stopping else {"steps": steps}
    a = make_config("a", "lora", {"0": 1.0, "1": 1.1, "2": 1.05}, **SECONDS, **extra)
    b = make_config("b", "dora", {"0": 1.3, "1": 1.35, "2": 1.32}, **SECONDS, **extra)
    if stopping:
        for run in a.runs + b.runs:
            run.tags["oneml.stopped_early"] = "true" if run.metrics["steps"] < 100 else "false"
    return StudyResults("s", "study", "sqlite://", [a, b], [])


def test_the_note_counts_the_runs_that_stopped_early_and_says_what_it_means():
    note = early_stopping_note(_study(True))
    assert note.startswith(
        "early stopping ended 4 of 6 run(s) before their budget (steps run 40-100; best steps 30-100)"
    )
    assert "eval_* and test_* are those of its best evaluated step, chosen on the validation rows" in note
    assert "count the steps actually run" in note
    assert early_stopping_note(_study(False)) is None


def test_the_cost_table_shows_steps_run_and_the_best_step_only_with_early_stopping():
    (analysis,) = analyse_study(_study(True), DecisionOptions())
    table = cost_table(analysis)
    assert "steps run" in table.columns and "best step" in table.columns
    row = table.rows[0]
    assert row[table.columns.index("steps run")] == "67 ± 31"  # mean of 40, 100, 60 (what a run cost)
    (plain,) = analyse_study(_study(False), DecisionOptions())
    assert "steps run" not in cost_table(plain).columns  # every run ran its budget: nothing to show
