"""Property-based: whatever configs and dataset rows a user writes, oneml either accepts them or refuses them with
one line (an OnemlError), and data preparation never emits an example without input or without a label.

No training here: config validation and data preparation only, with a bounded number of examples.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from oneml.config import RunConfig, apply_overrides, describe_keys, load_yaml, resolve
from oneml.errors import OnemlError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every documented key (method and objective keys of each registered kind), plus names that are not keys.
KEYS = sorted({row[0].split("[")[0] + "." + row[0].split("]")[-1].lstrip(".") if "[" in row[0] else row[0]
               for row in describe_keys()})  # fmt: skip
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from(["lora", "qlora", "pissa", "dpo", "orpo", "sft", "tiny-llama", "nf4", "auto", "all-linear", "..."]),
)
VALUE = st.recursive(
    LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6
)


def _one_line(err: OnemlError) -> None:
    text = str(err)
    assert text and "\n" not in text and len(text) < 2000, text


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS) | TEXT, VALUE, max_size=5))
def test_any_overrides_validate_or_fail_with_one_line(pairs):
    overrides = [f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in pairs.items()]
    try:
        config = resolve(apply_overrides({}, overrides))
    except OnemlError as err:
        _one_line(err)
        event("refused")
        return
    event("valid")
    assert isinstance(config, RunConfig) and len(config.run_id) == 12


@SETTINGS
@given(st.dictionaries(st.sampled_from(["model", "method", "objective", "data", "train", "tracking"]) | TEXT, VALUE))
def test_any_config_document_validates_or_fails_with_one_line(document):
    try:
        resolve(document)
    except OnemlError as err:
        _one_line(err)


@SETTINGS
@given(st.text(max_size=200))
def test_any_yaml_text_loads_or_fails_with_one_line(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            data = load_yaml(path)
        except OnemlError as err:
            _one_line(err)
            return
        assert isinstance(data, dict)


# Dataset rows: the right fields or not, empty, over-long, of the wrong type, in any script.
FIELD = st.one_of(
    TEXT,
    st.just(""),
    st.text(min_size=300, max_size=600),  # longer than data.max_length below
    st.integers(),
    st.none(),
    st.lists(TEXT, max_size=2),
    st.dictionaries(TEXT, TEXT, max_size=2),
)
PLAIN = TEXT.filter(str.strip)
WORDS = st.one_of(PLAIN, PLAIN, PLAIN, st.text(min_size=300, max_size=600), st.just(""), st.just("  \n "))
ALPACA_ANY = st.fixed_dictionaries({}, optional={"instruction": FIELD, "input": FIELD, "output": FIELD, "x": FIELD})
ALPACA = st.fixed_dictionaries({"instruction": WORDS, "output": WORDS}, optional={"input": WORDS})
PAIR_ANY = st.fixed_dictionaries({}, optional={"prompt": FIELD, "chosen": FIELD, "rejected": FIELD})
PAIR = st.fixed_dictionaries({"prompt": WORDS, "chosen": WORDS, "rejected": WORDS})
BROKEN = st.sampled_from(["{", "[1, 2]", '"text"', "null", '{"instruction": }'])
# Mostly well-formed rows (so that preparation often succeeds and its output is checked), some of anything.
SFT_LINE = st.one_of(*[ALPACA.map(json.dumps)] * 6, ALPACA_ANY.map(json.dumps), BROKEN)
PAIR_LINE = st.one_of(*[PAIR.map(json.dumps)] * 6, PAIR_ANY.map(json.dumps))


@pytest.fixture(scope="module")
def tokenizer():
    from oneml.config import ModelConfig
    from oneml.models import load_model_and_tokenizer

    return load_model_and_tokenizer(ModelConfig(name="tiny-llama"))[1]


def _prepare(kind: str, lines: list[str], tokenizer, **data):
    from oneml.config import DataConfig
    from oneml.data import prepare_preference, prepare_sft

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cfg = DataConfig(dataset=str(path), eval_size=1, max_length=64, chat_template="chatml", **data)
        prepare = prepare_sft if kind == "sft" else prepare_preference
        return prepare(cfg, tokenizer)


def _checked(kind: str, lines: list[str], tokenizer, **data):
    """Prepared data whose every example can be trained on, or None after a one-line refusal."""
    try:
        prepared = _prepare(kind, lines, tokenizer, **data)
    except OnemlError as err:
        _one_line(err)
        event("refused")
        return None
    event("prepared")
    for split in (prepared.train, prepared.eval):
        assert len(split) > 0
        for row in split:
            if kind == "sft":
                assert row["input_ids"] and len(row["input_ids"]) <= 64
                assert any(label != -100 for label in row["labels"])  # something to learn from
            else:
                chosen, rejected = (row[k].replace("<|im_end|>", "").strip() for k in ("chosen", "rejected"))
                assert chosen and rejected and row["chosen"] != row["rejected"]
    return prepared


@SETTINGS
@given(st.lists(ALPACA.map(json.dumps), min_size=2, max_size=10))
def test_sft_preparation_never_emits_an_empty_example(tokenizer, lines):
    _checked("sft", lines, tokenizer)


@SETTINGS
@given(st.lists(SFT_LINE, min_size=1, max_size=10))
def test_sft_rows_of_any_shape_prepare_or_fail_with_one_line(tokenizer, lines):
    _checked("sft", lines, tokenizer)


@SETTINGS
@given(st.lists(PAIR.map(json.dumps), min_size=2, max_size=10))
def test_preference_preparation_never_emits_an_empty_pair(tokenizer, lines):
    _checked("preference", lines, tokenizer, format="preference")


@SETTINGS
@given(st.lists(PAIR_LINE, min_size=1, max_size=10))
def test_preference_rows_of_any_shape_prepare_or_fail_with_one_line(tokenizer, lines):
    _checked("preference", lines, tokenizer)


@SETTINGS
@given(st.lists(ALPACA.map(json.dumps), min_size=2, max_size=6), st.integers(0, 5))
def test_a_broken_json_line_is_reported_with_its_number(tokenizer, lines, at):
    at = at % len(lines)
    lines[at] = '{"instruction": "x", "output": '  # cut off mid-object
    with pytest.raises(OnemlError, match=rf"line {at + 1}: invalid JSON") as info:
        _prepare("sft", lines, tokenizer)
    _one_line(info.value)
