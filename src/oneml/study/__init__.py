"""Studies: many runs from one spec (tracks x grid x seeds), resumable, run by a pluggable executor."""

from oneml.study.expand import Trial, expand
from oneml.study.spec import StudySpec, load_study

__all__ = ["StudySpec", "Trial", "expand", "load_study"]
