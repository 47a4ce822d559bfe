"""Analysis: statistics across runs, the decision guide, figures and the report, from tracked results only.

Reads MLflow and nothing else; never imports torch (a test holds it to that), so a report can be written
on any machine that can reach the tracking store.

    from oneml.analysis import DecisionOptions, load_study, write_report
    study = load_study("methods-smollm", "sqlite:///oneml-runs/mlflow.db")
    write_report([study], Path("oneml-runs/reports/methods-smollm"), DecisionOptions(metric="eval_loss"))
"""

from oneml.analysis.decision import (
    DEFAULT_WEIGHTS,
    METHOD_COMPLEXITY,
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
from oneml.analysis.stats import Comparison, Summary, against_best, compare, holm, summarize

__all__ = [
    "DEFAULT_WEIGHTS",
    "METHOD_COMPLEXITY",
    "PRIORITIES",
    "Analysis",
    "Comparison",
    "Configuration",
    "DecisionOptions",
    "Recommendation",
    "RunData",
    "StudyResults",
    "Summary",
    "against_best",
    "analyse",
    "analyse_study",
    "build_report",
    "compare",
    "decision_table",
    "default_out",
    "holm",
    "known_studies",
    "load_experiment",
    "load_study",
    "parse_weights",
    "recommend",
    "summarize",
    "write_report",
]
