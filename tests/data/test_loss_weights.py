"""Per-message loss weights and train flags decide the loss mask, proved token by token on files in the forms that
carry them: LLaMA-Factory v1 (``loss_weight``), ShareGPT with Axolotl's ``weight`` / ``train`` / ``training``.

The expected mask is computed independently of the library: the rendered text is searched for each answer block
``<|im_start|>assistant\\n{answer}<|im_end|>`` and its character span mapped to token positions; every position is
then compared (a label is the token itself, or -100).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from oneml.config import DataConfig
from oneml.data import IGNORE_INDEX, load_rows, prepare_sft, to_conversations, tokenize_conversation
from oneml.errors import OnemlError
from oneml.models.tokenizer import CHATML_TEMPLATE, byte_tokenizer

HEADER, END = "<|im_start|>assistant\n", "<|im_end|>"
TRL_TEMPLATES = Path(importlib.util.find_spec("trl").submodule_search_locations[0]) / "chat_templates"
QWEN2_5 = (TRL_TEMPLATES / "qwen2_5.jinja").read_text()
"""Qwen2.5's own chat template, as TRL ships it: a real model's template, with a default system message."""


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture
def alpaca(shared_data):
    return json.loads((shared_data / "alpaca_en_demo.json").read_text())[:10]


def _lf_v1_rows(alpaca) -> list[dict]:
    """LLaMA-Factory v1 rows: a draft answer not to learn from (loss_weight 0), a follow-up, the answer to learn."""
    rows = []
    for r in alpaca:
        turns = [
            ("user", r["instruction"], 0.0),
            ("assistant", "A first draft.", 0.0),
            ("user", "Now the full answer, please.", 0.0),
            ("assistant", r["output"], 1.0),
        ]
        messages = [
            {"role": role, "content": [{"type": "text", "value": text}], "loss_weight": w} for role, text, w in turns
        ]
        rows.append({"messages": messages})
    return rows


def _expected_labels(tok, text: str, ids: list[int], answers: list[tuple[str, bool]]) -> list[int]:
    """-100 everywhere but the learned answers' tokens (answer + end-of-turn), found by searching the text."""
    labels, at = [IGNORE_INDEX] * len(ids), 0
    for answer, learned in answers:
        block = text.index(HEADER + answer + END, at)
        start, end = block + len(HEADER), block + len(HEADER) + len(answer) + len(END)
        first, last = (len(tok(text[:offset], add_special_tokens=False)["input_ids"]) for offset in (start, end))
        if learned:
            labels[first:last] = ids[first:last]
        at = end
    return labels


@pytest.mark.parametrize("template", [CHATML_TEMPLATE, QWEN2_5], ids=["chatml", "qwen2.5"])
def test_lf_v1_loss_weights_mask_token_by_token(tmp_path, tok, alpaca, template):
    path = tmp_path / "lf_v1.json"
    path.write_text(json.dumps(_lf_v1_rows(alpaca)))
    conversations = to_conversations(load_rows(DataConfig(dataset=str(path))), "messages", str(path)).items
    for conv, r in zip(conversations, alpaca, strict=True):
        example = tokenize_conversation(tok, conv.messages, 100_000, chat_template=template)
        plain = [{"role": m["role"], "content": m["content"]} for m in conv.messages]
        text = tok.apply_chat_template(plain, chat_template=template, tokenize=False)
        assert tok.decode(example["input_ids"]) == text
        expected = _expected_labels(tok, text, example["input_ids"], [("A first draft.", False), (r["output"], True)])
        assert example["labels"] == expected  # every position: the draft is -100, the answer is learned


def test_without_weights_both_answers_are_learned(tok, alpaca):
    messages = [{"role": m["role"], "content": m["content"][0]["value"]} for m in _lf_v1_rows(alpaca)[0]["messages"]]
    example = tokenize_conversation(tok, messages, 100_000)
    text = tok.decode(example["input_ids"])
    answers = [("A first draft.", True), (alpaca[0]["output"], True)]
    assert example["labels"] == _expected_labels(tok, text, example["input_ids"], answers)


@pytest.mark.parametrize(
    "flag",
    [{"weight": 0}, {"train": False}, {"training": False}, {"loss_weight": 0}],
    ids=["axolotl-weight", "train-false", "axolotl-training", "loss_weight"],
)
def test_sharegpt_train_flags_mask_the_turn(tmp_path, tok, alpaca, flag):
    rows = [
        {
            "conversations": [
                {"from": "human", "value": r["instruction"]},
                {"from": "gpt", "value": "A first draft.", **flag},
                {"from": "human", "value": "Now the full answer, please."},
                {"from": "gpt", "value": r["output"]},
            ]
        }
        for r in alpaca
    ]
    path = tmp_path / "sharegpt.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = prepare_sft(DataConfig(dataset=str(path), eval_size=1, max_length=100_000), tok)
    for ids, labels in zip(data.train["input_ids"], data.train["labels"], strict=True):
        text = tok.decode(ids)
        output = next(r["output"] for r in alpaca if HEADER + r["output"] + END in text)
        assert labels == _expected_labels(tok, text, ids, [("A first draft.", False), (output, True)])


def test_loss_on_all_learns_every_token_but_the_turns_weighted_0(tmp_path, tok, alpaca):
    path = tmp_path / "lf_v1.json"
    path.write_text(json.dumps(_lf_v1_rows(alpaca)))
    data = prepare_sft(DataConfig(dataset=str(path), eval_size=1, max_length=100_000, loss_on="all"), tok)
    for ids, labels in zip(data.train["input_ids"], data.train["labels"], strict=True):
        text = tok.decode(ids)
        draft = _expected_labels(tok, text, ids, [("A first draft.", True)])  # the draft's span, labelled
        expected = [IGNORE_INDEX if d != IGNORE_INDEX else t for t, d in zip(ids, draft, strict=True)]
        assert labels == expected  # all tokens (user turns too: LLaMA-Factory's 0 on them is their default)


def test_a_turn_learned_nowhere_drops_the_row(tmp_path, tok, alpaca):
    rows = _lf_v1_rows(alpaca)
    rows[0]["messages"][3]["loss_weight"] = 0.0  # neither answer of row 0 is learned
    path = tmp_path / "lf_v1.json"
    path.write_text(json.dumps(rows))
    data = prepare_sft(DataConfig(dataset=str(path), eval_size=1, max_length=100_000), tok)
    assert data.stats["dropped_no_labels"] == 1 and data.stats["train_rows"] + data.stats["eval_rows"] == 9


@pytest.mark.parametrize(
    "message, error",
    [
        (
            {"role": "assistant", "content": "x", "loss_weight": 0.5},
            r"row 1 of .*: messages\[1\]\.loss_weight must be 0 or 1 \(or true/false\), got 0\.5: the SFT loss masks",
        ),
        ({"role": "assistant", "content": "x", "loss_weight": "1"}, r"messages\[1\]\.loss_weight must be 0 or 1"),
        (
            {"role": "user", "content": "x", "loss_weight": 1.0},
            r"messages\[1\] is a user message marked to be learned; only assistant turns are \(data\.loss_on: all",
        ),
        (
            {"role": "assistant", "content": "x", "loss_weight": 1, "train": False},
            r"messages\[1\] says both loss_weight=1, train=False; keep one",
        ),
    ],
    ids=["fraction", "string", "user-turn", "conflict"],
)
def test_weights_the_mask_cannot_honour_are_refused_in_one_line(tmp_path, tok, message, error):
    ok = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad = {"messages": [{"role": "user", "content": "q"}, message, {"role": "assistant", "content": "a"}]}
    path = tmp_path / "weights.jsonl"
    path.write_text(json.dumps(ok) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(OnemlError, match=error) as err:
        prepare_sft(DataConfig(dataset=str(path)), tok)
    assert "\n" not in str(err.value)
