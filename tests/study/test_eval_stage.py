"""A study's evaluation stage: benchmarks on every finished run, in MLflow and in the report; resumable."""

from __future__ import annotations

import pytest
from studykit import write_study

from oneml.analysis.metrics import summary_keys
from oneml.analysis.results import load_study as load_results
from oneml.errors import OnemlError
from oneml.study import load_study
from oneml.study.run import run_study
from oneml.tracking import resolve_tracking_uri

STAGE = {"benchmarks": ["perplexity", "gsm8k"], "limit": 2, "max_new_tokens": 8}


def small(tmp_path, **changes):
    path = write_study(tmp_path, tracks={"main": {"grid": {"method.r": [4]}}}, seeds=[0, 1], **changes)
    spec = load_study(path)
    base = dict(spec.base)
    base["train"] = {**base["train"], "save_adapter": True}
    return spec.model_copy(update={"base": base})


def test_stage_scores_every_run_and_the_report_sees_it(tmp_path):
    spec = small(tmp_path, eval=STAGE)
    result = run_study(spec, progress=False)
    assert set(result.evaluated.values()) == {"evaluated"} and len(result.evaluated) == 2
    uri = resolve_tracking_uri(None, tmp_path / "root")
    study = load_results(spec.name, uri)
    keys = study.metric_keys()
    assert {"bench/gsm8k/exact_match", "bench-lower/perplexity/loss"} <= keys
    assert "bench/gsm8k/exact_match" in summary_keys(keys)
    again = run_study(spec, progress=False)  # resume: nothing retrained, nothing re-scored
    assert set(again.evaluated.values()) == {"skipped"} and again.steps_trained == 0


def test_bad_stage_fails_before_training(tmp_path):
    spec = small(tmp_path, eval={"benchmarks": ["gsm8kk"]})
    with pytest.raises(OnemlError, match="unknown benchmark 'gsm8kk'"):
        run_study(spec, progress=False)
    assert not (tmp_path / "root" / "runs").exists()
    unsaved = load_study(write_study(tmp_path / "b", eval=STAGE))  # tiny.yaml keeps no model
    with pytest.raises(OnemlError, match="save_adapter"):
        run_study(unsaved, progress=False)
