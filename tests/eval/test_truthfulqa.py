"""TruthfulQA MC1/MC2 scoring rules, the local stand-in file and the message when the hub is unreachable."""

from __future__ import annotations

import json
import math

import pytest

from oneml.errors import OnemlError
from oneml.eval.bench.truthfulqa import TruthfulQA, context_for, mc1, mc2
from oneml.eval.benchmarks import EvalOptions


def test_mc1_is_right_only_when_the_true_answer_scores_highest():
    assert mc1([-1.0, -2.0, -3.0], [1, 0, 0]) == 1.0
    assert mc1([-2.0, -1.0, -3.0], [1, 0, 0]) == 0.0


def test_mc2_is_the_normalised_probability_of_the_true_answers():
    logps = [math.log(0.2), math.log(0.3), math.log(0.5)]
    assert mc2(logps, [1, 1, 0]) == pytest.approx(0.5)
    # very negative log-likelihoods (long answers) must not underflow to 0/0
    assert mc2([-2000.0, -2001.0], [1, 0]) == pytest.approx(1 / (1 + math.exp(-1)))


def rows(n=3):
    return [
        {
            "question": f"Is claim {i} true?",
            "mc1_targets": {"choices": ["No.", "Yes."], "labels": [1, 0]},
            "mc2_targets": {"choices": ["No.", "Not really.", "Yes."], "labels": [1, 1, 0]},
        }
        for i in range(n)
    ]


def test_local_copy_loads_and_limit_applies(tmp_path):
    path = tmp_path / "tqa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows()))
    items = TruthfulQA().load(EvalOptions(limit=2, data={"truthfulqa": path}), config=None)
    assert len(items) == 2 and items[0]["mc2"] == (["No.", "Not really.", "Yes."], [1, 1, 0])
    assert context_for("Q?").endswith("\n\nQ: Q?\nA:")


def test_malformed_rows_name_the_row(tmp_path):
    broken = rows(2)
    broken[1]["mc1_targets"] = {"choices": ["a", "b"], "labels": [0, 0]}
    path = tmp_path / "tqa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in broken))
    with pytest.raises(OnemlError, match="row 1: mc1_targets has no true answer"):
        TruthfulQA().load(EvalOptions(data={"truthfulqa": path}), config=None)


def test_unreachable_hub_says_so_in_one_line():
    with pytest.raises(OnemlError) as info:  # tests run with HF_DATASETS_OFFLINE=1
        TruthfulQA().load(EvalOptions(), config=None)
    text = str(info.value)
    assert "\n" not in text and "hub" in text and "--data truthfulqa=" in text
