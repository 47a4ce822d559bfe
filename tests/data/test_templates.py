"""Chat templates and response-only labels, checked by decoding with the byte-level tokenizer."""

from __future__ import annotations

import pytest

from oneml.config import DataConfig
from oneml.data import IGNORE_INDEX, resolve_chat_template, tokenize_conversation
from oneml.errors import OnemlError
from oneml.models.tokenizer import CHATML_TEMPLATE, byte_tokenizer

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome.\n"},
]


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def _label_spans(tokenizer, example) -> list[str]:
    """Decoded runs of consecutive labelled tokens."""
    spans, current = [], []
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return [tokenizer.decode(s) for s in spans]


def test_labels_are_exactly_the_assistant_turns(tok):
    example = tokenize_conversation(tok, CONVERSATION, max_length=1024)
    assert _label_spans(tok, example) == ["Paris.<|im_end|>", "Rome.\n<|im_end|>"]
    assert tok.decode(example["input_ids"]) == tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert example["truncated"] is False


def test_labels_without_a_trailing_newline_in_the_template(tok):
    template = CHATML_TEMPLATE.replace("'<|im_end|>' + '\\n'", "'<|im_end|>'")
    example = tokenize_conversation(tok, CONVERSATION, max_length=1024, chat_template=template)
    assert _label_spans(tok, example) == ["Paris.<|im_end|>", "Rome.\n<|im_end|>"]


def test_loss_on_all_labels_every_token(tok):
    example = tokenize_conversation(tok, CONVERSATION, max_length=1024, loss_on="all")
    assert example["labels"] == example["input_ids"]


def test_truncation_keeps_max_length_tokens(tok):
    full = tokenize_conversation(tok, CONVERSATION, max_length=1024)
    cut = tokenize_conversation(tok, CONVERSATION, max_length=len(full["input_ids"]) - 3)
    assert cut["truncated"] is True
    assert cut["input_ids"] == full["input_ids"][:-3] and cut["labels"] == full["labels"][:-3]


def test_wholly_truncated_answer_is_dropped(tok):
    conversation = [{"role": "user", "content": "x" * 100}, {"role": "assistant", "content": "y"}]
    assert tokenize_conversation(tok, conversation, max_length=50) is None
    assert tokenize_conversation(tok, conversation, max_length=50, loss_on="all") is not None


def test_unknown_loss_on(tok):
    with pytest.raises(OnemlError, match="unknown data.loss_on 'everything'"):
        tokenize_conversation(tok, CONVERSATION, 64, loss_on="everything")


def test_template_breaking_the_prefix_property_is_refused(tok):
    # The answer header differs between the generation prompt and the rendered turn.
    template = (
        "{% for m in messages %}{% if m.role == 'assistant' %}BOT: {% else %}USER: {% endif %}"
        "{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT: {% endif %}"
    )
    with pytest.raises(OnemlError, match="does not tokenize to a prefix of the whole conversation"):
        tokenize_conversation(tok, CONVERSATION, 1024, chat_template=template)
    assert tokenize_conversation(tok, CONVERSATION, 1024, loss_on="all", chat_template=template) is not None


def test_template_errors_become_one_line(tok):
    template = "{{ raise_exception('System role not supported') }}"
    with pytest.raises(OnemlError, match="^data.chat_template: the chat template failed on a conversation: System"):
        tokenize_conversation(tok, CONVERSATION, 1024, chat_template=template)


def test_resolve_chat_template(tok):
    assert resolve_chat_template(tok, DataConfig()) == tok.chat_template
    assert resolve_chat_template(tok, DataConfig(chat_template="chatml")) == CHATML_TEMPLATE
    jinja = "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert resolve_chat_template(tok, DataConfig(chat_template=jinja)) == jinja
    with pytest.raises(OnemlError, match=r"unknown template 'chatlm' \(did you mean 'chatml'\?\)"):
        resolve_chat_template(tok, DataConfig(chat_template="chatlm"))


def test_tokenizer_without_a_template():
    bare = byte_tokenizer()
    bare.chat_template = None
    bare.name_or_path = "tiny/no-template"
    with pytest.raises(OnemlError) as err:
        resolve_chat_template(bare, DataConfig())
    assert str(err.value) == (
        "data.chat_template: the tokenizer of tiny/no-template has no chat template; "
        "set data.chat_template: chatml (or a Jinja template)"
    )
    assert resolve_chat_template(bare, DataConfig(chat_template="chatml")) == CHATML_TEMPLATE
