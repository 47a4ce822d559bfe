"""Tool-calling conversations, in the two forms datasets use, rendered by a real model's chat template (Qwen2.5's,
as TRL ships it): the row's tools, the assistant's tool calls and the tool results all reach the text; the calls
are learned, the results are not; a template without tool support is refused in one line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from oneml.config import DataConfig
from oneml.data import IGNORE_INDEX, prepare_preference, prepare_sft
from oneml.errors import OnemlError
from oneml.models.tokenizer import byte_tokenizer

QWEN2_5 = (
    Path(importlib.util.find_spec("trl").submodule_search_locations[0]) / "chat_templates/qwen2_5.jinja"
).read_text()

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CITIES = ["Paris", "Lima", "Oslo", "Pune", "Cairo", "Quito"]


def _glaive_rows() -> list[dict]:
    """LLaMA-Factory's ShareGPT tool form (glaive_toolcall_en_demo): tools as a JSON string, function_call and
    observation turns whose values are JSON."""
    return [
        {
            "conversations": [
                {"from": "human", "value": f"What is the weather in {city}?"},
                {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": city}})},
                {"from": "observation", "value": json.dumps({"temperature_c": 20 + i})},
                {"from": "gpt", "value": f"It is {20 + i} degrees in {city}."},
            ],
            "tools": json.dumps([WEATHER]),
        }
        for i, city in enumerate(CITIES)
    ]


def _openai_rows() -> list[dict]:
    """OpenAI / TRL form: tools as a list, assistant tool_calls with JSON-string arguments, tool messages."""
    rows = []
    for i, city in enumerate(CITIES):
        call = {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
        }
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"What is the weather in {city}?"},
                    {"role": "assistant", "content": "", "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": f"call_{i}", "content": json.dumps({"temperature_c": 20 + i})},
                    {"role": "assistant", "content": f"It is {20 + i} degrees in {city}."},
                ],
                "tools": [{"type": "function", "function": WEATHER}],
            }
        )
    return rows


def _write(tmp_path, rows, name) -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _spans(tok, ids, labels) -> list[str]:
    spans, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            spans, current = [*spans, tok.decode(current)], []
    return spans + ([tok.decode(current)] if current else [])


@pytest.mark.parametrize("rows", [_glaive_rows(), _openai_rows()], ids=["sharegpt-glaive", "openai"])
def test_tool_conversations_are_rendered_by_the_template(tmp_path, rows):
    tok = byte_tokenizer()
    path = _write(tmp_path, rows, "tools.jsonl")
    data = prepare_sft(DataConfig(dataset=path, eval_size=1, max_length=100_000, chat_template=QWEN2_5), tok)
    assert data.stats["train_rows"] == len(CITIES) - 1
    for ids, labels in zip(data.train["input_ids"], data.train["labels"], strict=True):
        text = tok.decode(ids)
        city = next(c for c in CITIES if f"weather in {c}?" in text)
        assert '"name": "get_weather"' in text.split("<tools>\n")[1].split("\n</tools>")[0]  # the tools block
        call = f'<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}\n</tool_call>'
        assert call in text and "<tool_response>" in text
        # Learned: the call and the final answer (each with its end-of-turn); not the question, not the result.
        spans = _spans(tok, ids, labels)
        assert len(spans) == 2 and spans[0] == call + "<|im_end|>" and spans[1].startswith("It is ")
        assert all("tool_response" not in s for s in spans)


def test_both_forms_render_the_same_text(tmp_path):
    tok = byte_tokenizer()
    cfg = {"eval_size": 1, "max_length": 100_000, "chat_template": QWEN2_5}
    glaive = prepare_sft(DataConfig(dataset=_write(tmp_path, _glaive_rows(), "g.jsonl"), **cfg), tok)
    openai = prepare_sft(DataConfig(dataset=_write(tmp_path, _openai_rows(), "o.jsonl"), **cfg), tok)
    # After the tools block (the OpenAI rows wrap the function in {type: function, ...}, printed as given).
    texts = [sorted(tok.decode(ids).split("\n</tools>")[1] for ids in d.train["input_ids"]) for d in (glaive, openai)]
    assert texts[0] == texts[1]


@pytest.mark.parametrize(
    "rows, what",
    [
        (_openai_rows(), "the rows' tools"),
        ([{**r, "tools": None} for r in _openai_rows()], "the assistant's tool_calls"),
    ],
    ids=["tools", "tool-calls"],
)
def test_a_template_without_tool_support_is_refused_in_one_line(tmp_path, rows, what):
    path = _write(tmp_path, rows, "tools.jsonl")
    with pytest.raises(OnemlError) as err:
        prepare_sft(DataConfig(dataset=path, eval_size=1), byte_tokenizer())  # the byte tokenizer's ChatML
    message = str(err.value)
    assert message.startswith(f"data.chat_template: the chat template ignores {what}") and "\n" not in message


def test_preference_prompts_carry_the_tools(tmp_path):
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Weather in {city}?"}],
            "chosen": f"Let me check {city}.",
            "rejected": "No idea.",
            "tools": [WEATHER],
        }
        for city in CITIES
    ]
    data = prepare_preference(
        DataConfig(dataset=_write(tmp_path, rows, "p.jsonl"), eval_size=1, chat_template=QWEN2_5), byte_tokenizer()
    )
    assert all("<tools>" in p and p.endswith("<|im_start|>assistant\n") for p in data.train["prompt"])


def test_a_malformed_tool_call_names_its_row(tmp_path):
    rows = _glaive_rows()
    rows[3]["conversations"][1]["value"] = '{"arguments": {}}'  # no name
    with pytest.raises(OnemlError, match=r"row 3 of .*: conversations\[1\] must be a tool call \{name, arguments\}"):
        prepare_sft(DataConfig(dataset=_write(tmp_path, rows, "t.jsonl"), chat_template=QWEN2_5), byte_tokenizer())
