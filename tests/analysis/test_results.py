"""Reading tracked results back from MLflow: grouping, labels, exclusions, histories, artifacts, errors."""

from __future__ import annotations

import pytest

from oneml.analysis.results import check_store, known_studies, load_experiment, load_many, load_study, loss_auc
from oneml.errors import OnemlError


def test_study_runs_are_grouped_by_configuration(demo):
    study = demo
    assert study.source == "study"
    finished = [c for c in study.configs if c.runs]
    assert [c.label for c in finished] == ["adalora r=8", "dora r=8", "full", "lora r=16", "lora r=8"]
    assert all(len(c.runs) == 6 and not c.failed for c in finished)
    # The configuration whose only runs failed (one) or were pruned is kept for its failure rate, not its results.
    [failed] = [c for c in study.configs if not c.runs]
    assert failed.config_id == "cfg999" and [r.status for r in failed.failed] == ["FAILED"]
    assert [r.seed for r in study.configs[0].runs] == ["0", "1", "2", "3", "4", "5"]
    assert all(c.track == "methods" and c.group == ("tiny-qwen2", "sft", "alpaca-demo") for c in finished)


def test_unfinished_runs_are_counted_not_analysed_and_the_parent_is_skipped(demo):
    study = demo
    assert sorted((r.state, r.reason) for r in study.excluded) == [
        ("failed", "RuntimeError: out of memory"),
        ("killed", "pruned at step 20"),
        ("pruned", "median rule at step 40"),
    ]
    assert all(r.status == "FINISHED" for r in study.runs)
    assert not any(r.tags.get("oneml.study_parent") for r in study.runs + study.excluded)


def test_histories_derived_metrics_and_artifacts(demo):
    study = demo
    by_label = {c.label: c for c in study.configs}
    run = by_label["adalora r=8"].runs[0]
    assert len(run.histories["train_loss"]) == 20 and run.histories["eval_loss"][0] == (0, 2.5)
    assert run.metrics["peak_memory_mib"] == run.metrics["peak_rss_mib"]
    assert run.metrics["train_loss_auc"] == pytest.approx(loss_auc(run.histories["train_loss"]))
    assert set(run.artifacts) == {"diagnostics/adalora_ranks.json"}
    assert "diagnostics/dora.json" in by_label["dora r=8"].runs[0].artifacts
    assert not by_label["full"].runs[0].artifacts


def test_loss_area_known_answer():
    assert loss_auc([(0, 2.0), (10, 0.0)]) == pytest.approx(1.0)  # a straight line from 2 to 0: mean 1
    assert loss_auc([(5, 3.0)]) == 3.0 and loss_auc([]) is None


def test_experiment_runs_made_by_hand(store):
    manual = load_experiment("manual", store.uri)
    assert manual.source == "experiment"
    assert {c.label: len(c.runs) for c in manual.configs} == {"full": 1, "lora r=4": 3, "lora r=8": 3}
    assert any("superseded" in note for note in manual.notes)  # seed 0 of lora r=8 ran twice


def test_unknown_study_names_it_and_lists_known_ones(store):
    assert known_studies(store.uri) == ["all-failed", "methods-demo", "methods-demo-b"]
    with pytest.raises(OnemlError) as err:
        load_study("methods-dem", store.uri)
    message = str(err.value)
    assert "'methods-dem'" in message and "did you mean 'methods-demo'" in message
    assert "known: all-failed, methods-demo, methods-demo-b" in message and "\n" not in message


def test_no_finished_runs_and_other_errors(store, tmp_path):
    with pytest.raises(OnemlError, match=r"study 'all-failed': no finished runs to analyse \(2 failed\)"):
        load_study("all-failed", store.uri)
    with pytest.raises(OnemlError, match="unknown experiment 'nope'"):
        load_experiment("nope", store.uri)
    with pytest.raises(OnemlError, match="no runs recorded"):
        check_store(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(OnemlError, match="name a study"):
        load_many([], [], store.uri)
