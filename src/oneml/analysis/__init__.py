"""Analysis: statistics across runs, the decision guide, figures and the report, from tracked results only.

Reads MLflow and nothing else; never imports torch (a test holds it to that), so a report can be written
on any machine that can reach the tracking store.

    from oneml.analysis import DecisionOptions, load_study, write_report
    study = load_study("methods-smollm", "sqlite:///oneml-runs/mlflow.db")
    write_report([study], Path("oneml-runs/reports/methods-smollm"), DecisionOptions(metric="eval_loss"))
"""

from oneml.analysis.decision import (
    DEFAULT_WEIGHTS,
    LEGACY_COMPLEXITY,
    PRIORITIES,
    Analysis,
    DecisionOptions,
    Recommendation,
    analyse,
    analyse_study,
    decision_table,
    parse_weights,
    recommend,
)
from oneml.analysis.report import build_report, default_out, write_report
from oneml.analysis.results import Configuration, RunData, StudyResults, known_studies, load_experiment, load_study
from oneml.analysis.stats import Summary, summarize
from oneml.analysis.verdicts import Comparison, Margin, Ranking, compare, parse_margin, rank

__all__ = [
    "DEFAULT_WEIGHTS",
    "LEGACY_COMPLEXITY",
    "PRIORITIES",
    "Analysis",
    "Comparison",
    "Configuration",
    "Margin",
    "DecisionOptions",
    "Recommendation",
    "Ranking",
    "RunData",
    "StudyResults",
    "Summary",
    "analyse",
    "analyse_study",
    "build_report",
    "compare",
    "decision_table",
    "default_out",
    "known_studies",
    "load_experiment",
    "load_study",
    "parse_margin",
    "parse_weights",
    "rank",
    "recommend",
    "summarize",
    "write_report",
]
