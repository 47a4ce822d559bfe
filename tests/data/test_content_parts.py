"""Message content as a list of parts, OpenAI style ({type: text, text}) and LLaMA-Factory v1 style ({type: text,
value}), in files derived from the shared alpaca demo: text parts joined, anything else refused in one line."""

from __future__ import annotations

import json

import pytest

from oneml.config import DataConfig
from oneml.data import load_rows, prepare_sft, to_conversations
from oneml.errors import OnemlError
from oneml.models.tokenizer import byte_tokenizer


@pytest.fixture
def alpaca(shared_data):
    return json.loads((shared_data / "alpaca_en_demo.json").read_text())[:12]


def _parts_file(tmp_path, alpaca, key: str, name: str = "parts.jsonl") -> str:
    """The alpaca rows as messages whose contents are lists of parts holding their text under ``key``;
    the instruction and the input are two parts of one user message."""
    rows = []
    for r in alpaca:
        user = [{"type": "text", key: r["instruction"]}]
        if r["input"].strip():
            user.append({"type": "text", key: "\n\n" + r["input"]})
        answer = [{"type": "text", key: r["output"]}]
        rows.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]})
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize("key", ["text", "value"], ids=["openai", "llamafactory-v1"])
def test_text_parts_are_joined_into_the_message(tmp_path, alpaca, key):
    path = _parts_file(tmp_path, alpaca, key)
    out = to_conversations(load_rows(DataConfig(dataset=path)), "messages", path)
    assert len(out.items) == len(alpaca)
    for conv, r in zip(out.items, alpaca, strict=True):
        user = r["instruction"] + ("\n\n" + r["input"] if r["input"].strip() else "")
        assert conv.messages == [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]


def test_parts_train_like_plain_text(tmp_path, alpaca):
    """The same rows with parts or with plain strings give the same tokens and labels."""
    tok = byte_tokenizer()
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(alpaca))
    cfg = {"eval_size": 2, "max_length": 4096}
    with_parts = prepare_sft(DataConfig(dataset=_parts_file(tmp_path, alpaca, "value"), **cfg), tok)
    reference = prepare_sft(DataConfig(dataset=str(plain), **cfg), tok)
    assert list(with_parts.train["input_ids"]) == list(reference.train["input_ids"])
    assert list(with_parts.train["labels"]) == list(reference.train["labels"])


@pytest.mark.parametrize(
    "part, kind",
    [
        ({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}, "image_url"),
        ({"type": "input_audio", "input_audio": {"data": "UklGR...", "format": "wav"}}, "input_audio"),
        ({"type": "image_url", "value": "cat.png"}, "image_url"),  # LLaMA-Factory v1's media part
    ],
)
def test_a_non_text_part_is_refused_with_its_row_and_type(tmp_path, alpaca, part, kind):
    path = tmp_path / "media.jsonl"
    base = _parts_file(tmp_path, alpaca, "text", "base.jsonl")
    rows = [json.loads(line) for line in open(base)]
    rows[7]["messages"][0]["content"].append(part)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(OnemlError) as err:
        prepare_sft(DataConfig(dataset=str(path)), byte_tokenizer())
    message = str(err.value)
    assert message.startswith(f"data: row 7 of {path}: messages[0].content[") and "\n" not in message
    assert f"is a {kind!r} part; only text parts" in message


def test_a_part_without_text_is_refused(tmp_path):
    rows = [{"messages": [{"role": "user", "content": [{"type": "text", "text": ["not", "text"]}]}]}]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(OnemlError, match=r"row 0 of .*: messages\[0\]\.content\[0\]\.text must be text, got list"):
        to_conversations(load_rows(DataConfig(dataset=str(path))), "messages", str(path))
