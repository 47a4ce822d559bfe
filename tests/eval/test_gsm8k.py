"""GSM8K answer extraction and scoring rules on crafted outputs: right, wrong, malformed."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from oneml.errors import OnemlError
from oneml.eval.bench.gsm8k import (
    EXEMPLARS,
    GSM8K,
    extract_flexible,
    extract_strict,
    messages_for,
    parse_number,
    reference_answer,
)
from oneml.eval.benchmarks import EvalOptions


@pytest.mark.parametrize(
    ("text", "value"),
    [("42", 42), ("1,234", 1234), ("$5", 5), ("-3", -3), ("2.50", Decimal("2.5")), ("7.", 7), ("", None), ("x", None)],
)
def test_parse_number(text, value):
    assert parse_number(text) == (None if value is None else Decimal(value))


def test_reference_answer_reads_the_hash_line_of_a_real_row(shared_data):
    row = json.loads((shared_data / "gsm8k_test.jsonl").read_text().splitlines()[0])
    assert reference_answer(row["answer"]) == Decimal(row["answer"].split("####")[-1].strip().replace(",", ""))
    assert reference_answer("so 3 + 4 = 7\n#### 1,000") == 1000
    with pytest.raises(ValueError, match="no '####'"):
        reference_answer("the answer is 5")


@pytest.mark.parametrize(
    ("output", "strict", "flexible"),
    [
        ("Tom has 3 + 4 = 7 apples. The answer is 7.", 7, 7),  # right, well formed
        ("So 5 * 4 = 20. The answer is $1,020.00", 1020, 1020),  # currency and separators
        ("The answer is 6. Wait, recount: 8", 6, 8),  # strict takes the statement, flexible the last number
        ("First 2, then 3.\n#### 5", 5, 5),  # GSM8K's own answer layout
        ("I think it is 12", None, 12),  # no statement: flexible only
        ("I don't know.", None, None),  # malformed: no number at all
        ("The answer is -4", -4, -4),
    ],
)
def test_extraction(output, strict, flexible):
    assert extract_strict(output) == (None if strict is None else Decimal(strict))
    assert extract_flexible(output) == (None if flexible is None else Decimal(flexible))


def test_exemplar_answers_extract_to_their_own_result():
    # Each exemplar ends "The answer is N": the extractor must read N, or few-shot prompting teaches nothing.
    for _, answer in EXEMPLARS:
        assert extract_strict(answer) == extract_flexible(answer)
    assert len(EXEMPLARS) == 8


def test_prompt_has_the_shots_as_earlier_turns():
    messages = messages_for("How many?", 3)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3 + ["user"]
    assert messages[-1]["content"].endswith("How many?")
    assert messages_for("q", 0) == [{"role": "user", "content": "Question: q"}]


def test_load_uses_the_package_copy_and_honours_limit():
    items = GSM8K().load(EvalOptions(limit=5), config=None)
    assert len(items) == 5 and all(isinstance(i["target"], Decimal) for i in items)


def test_bad_local_rows_and_shots_are_one_line_errors(tmp_path):
    bad = tmp_path / "g.jsonl"
    bad.write_text('{"question": "q", "answer": "no hash line"}\n')
    with pytest.raises(OnemlError, match="gsm8k: row 0"):
        GSM8K().load(EvalOptions(data={"gsm8k": bad}), config=None)
    with pytest.raises(OnemlError, match="--shots"):
        GSM8K().load(EvalOptions(shots=9, limit=1), config=None)
