"""Halving with a test split: the rungs rank on eval_* and no rung reads a test row; only the runs that finish are
scored on the test rows, once each, after their last training step."""

from __future__ import annotations

import importlib

import yaml
from studykit import TINY, write_study

from oneml.study import load_study
from oneml.study.run import run_study
from splitkit import Timeline, spy_on_test_rows


def test_no_rung_reads_a_test_row(tmp_path, monkeypatch):
    base = yaml.safe_load(TINY.read_text())["base"]
    base["data"] |= {"test_size": 6}
    grid = {"main": {"grid": {"train.learning_rate": [1.0e-4, 3.0e-2]}}}
    halving = {"min_steps": 2, "eta": 2, "metric": "eval_token_accuracy"}
    study = load_study(write_study(tmp_path, base=base, tracks=grid, seeds=[0], halving=halving))
    timeline = Timeline()
    spy_on_test_rows(monkeypatch, timeline)
    calls: list[tuple[bool, list[tuple]]] = []
    runner = importlib.import_module("oneml.train")  # the package (`oneml.train` is also the function's name)
    real_train = runner.train

    def spied_train(config, **kwargs):
        start = len(timeline.events)
        result = real_train(config, **{**kwargs, "callbacks": [*(kwargs.get("callbacks") or []), timeline]})
        calls.append((result.complete, timeline.events[start:]))
        return result

    monkeypatch.setattr(runner, "train", spied_train)  # run_trial imports it from there at each call
    result = run_study(study, progress=False)

    assert sorted(result.states.values()) == ["finished", "pruned"]
    rungs = [events for complete, events in calls if not complete]
    finals = [events for complete, events in calls if complete]
    assert len(rungs) == 2 and len(finals) == 1  # both configurations paused at the rung, one went on
    assert all(timeline.reads(events) == [] for events in rungs)
    (final,) = finals
    end = final.index(("train_end", 4))
    assert timeline.reads(final[:end]) == [] and len(timeline.reads(final)) > 0
    finished = next(t for t in result.trials if result.states[t.run_id] == "finished")
    pruned = next(t for t in result.trials if result.states[t.run_id] == "pruned")
    assert finished.config.train.learning_rate == 3e-2 and pruned.config.train.learning_rate == 1e-4
