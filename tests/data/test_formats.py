"""Row formats: every registered format converts a crafted row; detection on the real shared files."""

from __future__ import annotations

import json

import pytest

from oneml.data import FORMATS, Conversation, PreferencePair, UnpairedExample, detect_format, to_conversations, to_pairs
from oneml.errors import OnemlError


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


# One crafted row per format, with the conversation it must become; a new format without a row here
# fails test_every_format_has_a_sample instead of going untested.
SAMPLES = {
    "alpaca": (
        {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
        [_msg("user", "Add 2 and 3."), _msg("assistant", "5")],
    ),
    "dolly": (
        {"instruction": "Summarise.", "context": "A long text.", "response": "Short.", "category": "summarization"},
        [_msg("user", "Summarise.\n\nA long text."), _msg("assistant", "Short.")],
    ),
    "messages": (
        {"messages": [_msg("system", "Be brief."), _msg("user", "Hi"), _msg("assistant", "Hello")]},
        [_msg("system", "Be brief."), _msg("user", "Hi"), _msg("assistant", "Hello")],
    ),
    "sharegpt": (
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        [_msg("user", "Hi"), _msg("assistant", "Hello")],
    ),
    "preference": (
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."},
        [_msg("user", "Hi"), _msg("assistant", "Hello!")],
    ),
    "kto": (  # no conversation for SFT: its sample is what to_unpaired makes of it
        {"prompt": "Hi", "completion": "Go away.", "label": False},
        [UnpairedExample(prompt=[_msg("user", "Hi")], completion="Go away.", label=False)],
    ),
}


def test_every_format_has_a_sample():
    assert set(SAMPLES) == set(FORMATS.names())


@pytest.mark.parametrize("name", FORMATS.names())
def test_sample_converts_and_is_detected(name):
    row, expected = SAMPLES[name]
    assert detect_format(row) == name
    fmt = FORMATS.get(name)
    assert (fmt.to_conversation or fmt.to_unpaired)(row) == expected


def test_alpaca_input_follows_a_blank_line():
    row = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}
    assert FORMATS.get("alpaca").to_conversation(row)[0] == _msg("user", "Translate to French.\n\nGood morning")


def test_alpaca_system_and_history():
    row = {
        "system": "You are terse.",
        "history": [["What is 1+1?", "2"], ["And 2+2?", "4"]],
        "instruction": "And 3+3?",
        "output": "6",
    }
    assert FORMATS.get("alpaca").to_conversation(row) == [
        _msg("system", "You are terse."),
        _msg("user", "What is 1+1?"),
        _msg("assistant", "2"),
        _msg("user", "And 2+2?"),
        _msg("assistant", "4"),
        _msg("user", "And 3+3?"),
        _msg("assistant", "6"),
    ]


def test_dolly_without_context():
    row = {"instruction": "Name a colour.", "context": "", "response": "Blue", "category": "open_qa"}
    assert FORMATS.get("dolly").to_conversation(row) == [_msg("user", "Name a colour."), _msg("assistant", "Blue")]


def test_messages_under_conversations_key():
    row = {"conversations": [_msg("user", "Hi"), _msg("assistant", "Hello")]}
    assert detect_format(row) == "messages"
    assert FORMATS.get("messages").to_conversation(row) == [_msg("user", "Hi"), _msg("assistant", "Hello")]


def test_sharegpt_system_and_roles():
    row = {
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "Q"},
            {"from": "gpt", "value": "A"},
        ]
    }
    assert FORMATS.get("sharegpt").to_conversation(row) == [
        _msg("system", "S"),
        _msg("user", "Q"),
        _msg("assistant", "A"),
    ]


PAIR = FORMATS.get("preference").to_pair


@pytest.mark.parametrize(
    "row",
    [
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."},
        {"prompt": [_msg("user", "Hi")], "chosen": [_msg("assistant", "Hello!")], "rejected": "Go away."},
        {"prompt": "Hi", "chosen": _msg("assistant", "Hello!"), "rejected": {"from": "gpt", "value": "Go away."}},
        {"messages": [_msg("user", "Hi")], "chosen": "Hello!", "rejected": "Go away."},
        {"instruction": "Hi", "input": "", "chosen": "Hello!", "rejected": "Go away."},
    ],
    ids=["strings", "message-lists", "message-dicts", "messages-prompt", "alpaca-style"],
)
def test_preference_shapes(row):
    assert PAIR(row) == PreferencePair(prompt=[_msg("user", "Hi")], chosen="Hello!", rejected="Go away.")


def test_preference_dpo_demo_row(shared_data):
    row = json.loads((shared_data / "dpo_en_demo.json").read_text())[0]
    assert detect_format(row) == "preference"
    pair = PAIR(row)
    assert pair.prompt == [_msg("user", row["conversations"][0]["value"])]
    assert pair.chosen == row["chosen"]["value"] and pair.rejected == row["rejected"]["value"]


def test_preference_ultrafeedback_row():
    # The shape of HuggingFaceH4/ultrafeedback_binarized[train_prefs]: whole conversations, plus 'messages'.
    conv = [_msg("user", "Why is the sky blue?")]
    row = {
        "prompt": "Why is the sky blue?",
        "prompt_id": "abc",
        "chosen": [*conv, _msg("assistant", "Rayleigh scattering.")],
        "rejected": [*conv, _msg("assistant", "Because of the sea.")],
        "messages": [*conv, _msg("assistant", "Rayleigh scattering.")],
        "score_chosen": 8.0,
        "score_rejected": 3.0,
    }
    assert detect_format(row) == "preference"
    assert PAIR(row) == PreferencePair(prompt=conv, chosen="Rayleigh scattering.", rejected="Because of the sea.")


def test_preference_multi_turn_prompt_comes_from_the_conversation():
    before = [_msg("user", "Hi"), _msg("assistant", "Hello"), _msg("user", "Joke?")]
    row = {
        "prompt": "Joke?",
        "chosen": [*before, _msg("assistant", "Knock knock.")],
        "rejected": [*before, _msg("assistant", "No.")],
    }
    assert PAIR(row).prompt == before


def test_sft_on_preference_rows_learns_the_chosen_answer(shared_data):
    rows = json.loads((shared_data / "dpo_en_demo.json").read_text())
    out = to_conversations(rows, "preference", "dpo-demo")
    assert len(out.items) == len(rows) and isinstance(out.items[0], Conversation)
    assert out.items[0].messages[-1] == _msg("assistant", rows[0]["chosen"]["value"])


def test_detect_on_real_rows(shared_data):
    alpaca = json.loads((shared_data / "alpaca_en_demo.json").read_text())
    assert detect_format(alpaca[0]) == "alpaca"
    gsm8k = json.loads((shared_data / "gsm8k_test.jsonl").read_text().splitlines()[0])
    # Raw GSM8K rows (question/answer) are no known format; the catalogue's field mapping makes them alpaca.
    with pytest.raises(OnemlError, match=r"data.format: cannot tell the format of gsm8k.*question, answer"):
        detect_format(gsm8k, "gsm8k")
    assert detect_format({"instruction": gsm8k["question"], "output": gsm8k["answer"]}) == "alpaca"


def test_missing_field_names_row_and_field():
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(12)] + [{"instruction": "q12"}]
    with pytest.raises(OnemlError) as err:
        to_conversations(rows, "alpaca", "alpaca-demo")
    assert str(err.value) == "data: row 12 of alpaca-demo has no 'output' field (format alpaca)"


def test_unknown_role_is_reported_with_the_row():
    rows = [{"conversations": [{"from": "robot", "value": "beep"}]}]
    with pytest.raises(OnemlError, match=r"row 0 of x\.json: conversations\[0\] has unknown role 'robot'"):
        to_conversations(rows, "sharegpt", "x.json")


def test_empty_responses_are_counted_not_fatal():
    rows = [
        {"instruction": "q", "output": "a"},
        {"instruction": "q", "output": "  "},
        {"instruction": "q", "output": None},
    ]
    out = to_conversations(rows, "alpaca", "d")
    assert len(out.items) == 1 and out.skipped_empty == 2


def test_pairs_skip_empty_and_identical():
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b"},
        {"prompt": "p", "chosen": "", "rejected": "b"},
        {"prompt": "p", "chosen": "same", "rejected": "same"},
    ]
    out = to_pairs(rows, "preference", "d")
    assert len(out.items) == 1 and out.skipped_empty == 1 and out.skipped_identical == 1


def test_pairs_from_an_sft_format_fail():
    with pytest.raises(OnemlError, match="alpaca rows have no preference pairs"):
        to_pairs([{"instruction": "q", "output": "a"}], "alpaca", "d")
