"""Successive halving on a grid whose answer is clear: the high learning rate wins on 8 tiny steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from oneml.study import expand
from oneml.study.run import run_study
from oneml.study.state import state
from oneml.tracking import resolve_tracking_uri

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from halving import compare, spec  # noqa: E402


@pytest.mark.slow
def test_halving_picks_the_full_grid_winner_with_less_compute(tmp_path):
    figures = compare(tmp_path)
    assert figures["full_best_lr"] == figures["halving_best_lr"] == 1e-2
    assert figures["full_steps"] == 4 * 2 * 8
    assert figures["halving_steps"] == 2 * (4 * 2 + 2 * 2 + 1 * 4)  # rungs at 2, 4, 8 keep 4, 2, 1 configs
    assert figures["steps_ratio"] == 0.5

    study = spec("lr-halving", tmp_path / "halving", True)
    states = [state(t) for t in expand(study)]
    assert states.count("finished") == 2 and states.count("pruned") == 6
    client = MlflowClient(resolve_tracking_uri(None, tmp_path / "halving"))
    pruned = client.search_runs(["1"], "tags.`oneml.pruned` = 'true'")
    assert len(pruned) == 6 and {r.info.status for r in pruned} == {"KILLED"}
    assert all(r.data.tags["oneml.pruned_reason"].startswith("rung ") for r in pruned)

    again = run_study(study, progress=False)  # a resumed halving study makes the same decisions, trains nothing
    assert again.steps_trained == 0
