"""Fixtures over one synthetic MLflow store (see synthetic.py), written once per session."""

from __future__ import annotations

import pytest
from synthetic import StudyWriter, write_store


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> StudyWriter:
    return write_store(tmp_path_factory.mktemp("analysis") / "oneml-runs")


@pytest.fixture(scope="session")
def demo(store):
    """The standard study as loaded (loading reads every run's histories and artifacts: do it once)."""
    from oneml.analysis import load_study

    return load_study("methods-demo", store.uri)
