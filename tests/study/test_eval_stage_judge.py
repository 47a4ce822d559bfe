"""A study's evaluation stage with a judge: every run judged against the data's references, the win rates on each
run's record where the decision guide's preference row reads them; an unreachable judge fails before training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_eval_stage import small

from oneml.analysis.decision import DecisionOptions, analyse, recommend
from oneml.analysis.results import load_study as load_results
from oneml.errors import OnemlError
from oneml.study.run import run_study
from oneml.tracking import resolve_tracking_uri

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from judgekit import Scripted, prefers_longer  # noqa: E402


def test_a_judged_stage_feeds_the_preference_row(tmp_path):
    with Scripted(prefers_longer) as server:
        stage = {"benchmarks": ["winrate"], "judge": server.url, "against": "reference", "limit": 3,
                 "max_new_tokens": 6}  # fmt: skip
        spec = small(tmp_path, eval=stage)
        result = run_study(spec, progress=False)
        assert set(result.evaluated.values()) == {"evaluated"} and len(server.requests) == 2 * 2 * 3
        again = run_study(spec, progress=False)  # resume: judged already, nothing re-judged
        assert set(again.evaluated.values()) == {"skipped"} and len(server.requests) == 12
    study = load_results(spec.name, resolve_tracking_uri(None, tmp_path / "root"))
    assert "bench/winrate/reference/lc_win_rate" in study.metric_keys()
    a = analyse(study.configs, DecisionOptions())
    row = recommend(a, "preference")
    assert "winrate LC win rate vs reference" in row.numbers


def test_an_unreachable_judge_fails_before_training(tmp_path):
    spec = small(tmp_path, eval={"benchmarks": ["winrate"], "judge": "http://127.0.0.1:9/v1"})
    with pytest.raises(OnemlError, match="--judge: endpoint http://127.0.0.1:9/v1 is unreachable"):
        run_study(spec, progress=False)
    assert not (tmp_path / "root" / "runs").exists()
