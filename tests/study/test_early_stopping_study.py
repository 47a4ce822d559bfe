"""Early stopping inside studies: a run it ends is a normal finish; with successive halving the rungs must fall on
evaluation steps, a paused run is ranked by the best evaluation so far, and a run that stopped before a rung takes
part in every later rung with its final (best-step) metrics; a pruned configuration's finished runs stay FINISHED,
tagged pruned, out of the comparison."""

from __future__ import annotations

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient
from studykit import TINY, write_study

from oneml.analysis.results import load_study as analysis_study
from oneml.analysis.stopping import early_stopping_note
from oneml.errors import OnemlError
from oneml.study import expand, load_study
from oneml.study.run import run_study
from oneml.study.state import journal_file, record, rung_metrics, state
from oneml.tracking import layout, resolve_tracking_uri

STOPPING = {"eval_steps": 2, "early_stopping": {"patience": 1, "min_delta": 10}}


def _base(root, **train):
    base = yaml.safe_load(TINY.read_text())["base"]
    base["train"] |= STOPPING | train
    return base | {"tracking": {"root": str(root / "root")}}


def test_rungs_off_the_evaluation_steps_are_refused_before_anything_runs(tmp_path):
    base = _base(tmp_path, eval_steps=3)
    halving = {"min_steps": 2, "eta": 2}
    study = load_study(write_study(tmp_path, base=base, halving=halving, budget={"max_steps": 8}))
    with pytest.raises(OnemlError, match=r"halving.min_steps: with train.early_stopping .* 2 is not a multiple of "):
        run_study(study, progress=False)
    assert not (tmp_path / "root" / "mlflow.db").exists()


def test_a_run_that_stopped_before_a_rung_brings_its_final_metrics_to_later_rungs(tmp_path):
    study = load_study(
        write_study(tmp_path, base=_base(tmp_path), halving={"min_steps": 2, "eta": 2}, budget={"max_steps": 8})
    )
    trial = expand(study)[0]
    record(trial, status="paused", rungs={"2": {"eval_loss": 3.0, "steps": 2.0}})
    assert rung_metrics(trial, 2) == {"eval_loss": 3.0, "steps": 2.0} and rung_metrics(trial, 4) is None
    final = layout.metrics_file(tmp_path / "root", trial.run_id)
    final.parent.mkdir(parents=True)
    final.write_text(json.dumps({"eval_loss": 2.5, "steps": 4.0, "best_step": 2.0}))  # stopped early at step 4
    assert rung_metrics(trial, 2) == {"eval_loss": 3.0, "steps": 2.0}  # a rung before the stop: as recorded then
    assert rung_metrics(trial, 4)["eval_loss"] == 2.5 and rung_metrics(trial, 8)["eval_loss"] == 2.5
    assert state(trial) == "finished"
    record(trial, status="pruned", reason="rung 1")
    assert state(trial) == "pruned"  # its configuration lost a later rung: pruned, all its seeds
    assert json.loads(journal_file(trial).read_text())["status"] == "pruned"


@pytest.mark.slow
def test_halving_with_early_stopping(tmp_path):
    """4 configurations pause at rung 2; the 2 kept stop early at step 4 (patience 1, nothing beats step 2 by 10),
    which is the next rung: ranked there by their final metrics, one is kept, one pruned while FINISHED."""
    base = _base(tmp_path)
    base["data"] |= {"test_size": 6}
    tracks = {"main": {"grid": {"train.learning_rate": [1.0e-4, 1.0e-3, 1.0e-2, 3.0e-2]}}}
    halving = {"min_steps": 2, "eta": 2}
    study = load_study(
        write_study(tmp_path, base=base, tracks=tracks, seeds=[0], halving=halving, budget={"max_steps": 8})
    )
    result = run_study(study, progress=False)
    assert sorted(result.states.values()) == ["finished", "pruned", "pruned", "pruned"]
    assert result.steps_trained == 4 * 2 + 2 * 2

    client = MlflowClient(resolve_tracking_uri(None, tmp_path / "root"))
    runs = {r.data.tags["oneml.run_id"]: r for r in client.search_runs(["1"], "tags.`oneml.track` = 'main'")}
    (winner,) = [t for t in result.trials if result.states[t.run_id] == "finished"]
    kept = runs[winner.run_id]
    assert kept.info.status == "FINISHED" and kept.data.tags["oneml.stopped_early"] == "true"
    assert kept.data.metrics["steps"] == 4 and kept.data.metrics["best_step"] == 2 and "test_loss" in kept.data.metrics
    late = [r for r in runs.values() if r.data.tags.get("oneml.pruned_reason", "").startswith("rung 1")]
    assert len(late) == 1 and late[0].info.status == "FINISHED" and late[0].data.tags["oneml.pruned"] == "true"
    early = [r for r in runs.values() if r.data.tags.get("oneml.pruned_reason", "").startswith("rung 0")]
    assert len(early) == 2 and {r.info.status for r in early} == {"KILLED"}

    analysed = analysis_study(study.name, resolve_tracking_uri(None, tmp_path / "root"), artifacts=False)
    assert [r.tags["oneml.run_id"] for r in analysed.runs] == [winner.run_id]
    assert early_stopping_note(analysed).startswith("early stopping ended 1 of 1 run(s) before their budget")
    assert run_study(study, progress=False).steps_trained == 0  # resumed: the same decisions, nothing trained
