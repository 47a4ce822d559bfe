"""Chat templates, and tokenized examples whose labels cover the assistant's turns only.

Response masking renders prefixes of the conversation instead of parsing the template: for each
assistant message i,

    start_i = len(tokens(render(messages[:i], add_generation_prompt=True)))   # answer begins here
    end_i   = len(tokens(render(messages[:i+1])))                             # turn ends here

and labels are the tokens in [start_i, end_i) minus trailing whitespace-only tokens (the newline a
template writes after its end-of-turn token belongs to the layout, not to the answer). This works for
any template for which every rendered prefix tokenizes to a prefix of the whole conversation; that
property is checked, and a template that breaks it gets a clear error rather than wrong labels.

A turn the row marks as not learned (``loss_weight: 0``, `oneml.data.messages`) keeps its tokens out of the
labels in either mode: loss_on: response labels the other assistant turns; loss_on: all labels every token but
those. Tools are rendered by the template itself (``apply_chat_template(tools=...)``); a template that drops the
tools or the tool calls of a row (renders the same text with and without them) is refused, since training on
such text would teach the model answers without the calls that explain them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oneml.data.messages import for_template
from oneml.errors import OnemlError, did_you_mean, unknown

if TYPE_CHECKING:
    from oneml.config import DataConfig
    from oneml.data.messages import Message

Tools = list[dict[str, Any]] | None

IGNORE_INDEX = -100
"""Label of a token that the loss skips (PyTorch's cross-entropy default)."""


def _chatml() -> str:
    from oneml.models.tokenizer import CHATML_TEMPLATE

    return CHATML_TEMPLATE


NAMED_TEMPLATES: dict[str, Callable[[], str]] = {"chatml": _chatml}
"""Templates a user can name in data.chat_template."""


def tokenizer_template(tokenizer: Any) -> str:
    """The tokenizer's own chat template; an error naming the model when it has none."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # tokenizers with several named templates
        template = template.get("default")
    if not template:
        model = getattr(tokenizer, "name_or_path", "") or "the model"
        raise OnemlError(
            f"data.chat_template: the tokenizer of {model} has no chat template; "
            "set data.chat_template: chatml (or a Jinja template)"
        )
    return template


def resolve_chat_template(tokenizer: Any, cfg: DataConfig) -> str:
    """The Jinja chat template to use: cfg.chat_template (a name or Jinja text), else the tokenizer's."""
    choice = cfg.chat_template
    if choice is None:
        return tokenizer_template(tokenizer)
    if choice in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[choice]()
    if "{{" in choice or "{%" in choice:
        return choice
    raise OnemlError(
        f"data.chat_template: unknown template {choice!r}{did_you_mean(choice, list(NAMED_TEMPLATES))}; "
        f"use one of {', '.join(NAMED_TEMPLATES)} or a Jinja template string"
    )


def render(
    tokenizer: Any, messages: list[Message], template: str, add_generation_prompt: bool = False, tools: Tools = None
) -> str:
    """The conversation as text, the way the template lays it out (with the tool definitions when given)."""
    extra = {"tools": tools} if tools else {}
    try:
        return tokenizer.apply_chat_template(
            for_template(messages),
            chat_template=template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **extra,
        )
    except Exception as err:  # templates raise their own errors (e.g. roles must alternate)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise OnemlError(f"data.chat_template: the chat template failed on a conversation: {first}") from None


def check_tool_support(tokenizer: Any, messages: list[Message], template: str, tools: Tools) -> None:
    """Refuse a template that renders a conversation's tools or tool calls as if they were not there."""
    if tools and render(tokenizer, messages, template, tools=tools) == render(tokenizer, messages, template):
        raise OnemlError(
            "data.chat_template: the chat template ignores the rows' tools (it renders the same text without "
            "them); use a model whose template supports tool calling, or set data.chat_template to one that does"
        )
    if any(m.get("tool_calls") for m in messages):
        bare = [{k: v for k, v in m.items() if k != "tool_calls"} for m in messages]
        if render(tokenizer, messages, template, tools=tools) == render(tokenizer, bare, template, tools=tools):
            raise OnemlError(
                "data.chat_template: the chat template ignores the assistant's tool_calls (it renders the same "
                "text without them); use a model whose template supports tool calling, or set data.chat_template "
                "to one that does"
            )


def _token_ids(tokenizer: Any, texts: list[str]) -> dict[str, list[int]]:
    """Token ids of each distinct text, in one batch call (specials come from the template, not added)."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return {}
    encoded = tokenizer(unique, add_special_tokens=False)["input_ids"]
    return dict(zip(unique, encoded, strict=True))


def _whitespace_tail(tokenizer: Any, ids: list[int], start: int, end: int) -> int:
    """``end`` moved back over trailing tokens that decode to whitespace only."""
    while end > start and not tokenizer.decode([ids[end - 1]]).strip():
        end -= 1
    return end


def _check_prefix(prefix: list[int], ids: list[int]) -> None:
    if ids[: len(prefix)] != prefix:
        raise OnemlError(
            "data.chat_template: a rendered prefix of a conversation does not tokenize to a prefix of the "
            "whole conversation, so the response tokens cannot be located; set data.chat_template: chatml "
            "or data.loss_on: all"
        )


def _answer_spans(
    tokenizer: Any, messages: list[Message], template: str, text: str, ids: list[int], tools: Tools
) -> list[tuple[int, int, float]]:
    """(start, end, loss weight) of each assistant turn: its answer tokens, from after the generation prompt to
    its end-of-turn token (trailing layout whitespace left out)."""
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    starts = [render(tokenizer, messages[:i], template, add_generation_prompt=True, tools=tools) for i in turns]
    ends = [render(tokenizer, messages[: i + 1], template, tools=tools) for i in turns]
    tokens = _token_ids(tokenizer, [t for t in starts + ends if t != text])
    tokens[text] = ids  # the last turn's end is the whole conversation, already tokenized
    spans = []
    for i, start_text, end_text in zip(turns, starts, ends, strict=True):
        start_ids, end_ids = tokens[start_text], tokens[end_text]
        _check_prefix(start_ids, ids)
        _check_prefix(end_ids, ids)
        start = len(start_ids)
        end = _whitespace_tail(tokenizer, ids, start, len(end_ids))
        spans.append((start, end, messages[i].get("loss_weight", 1.0)))
    return spans


def _response_labels(
    tokenizer: Any, messages: list[Message], template: str, text: str, ids: list[int], tools: Tools
) -> list[int]:
    labels = [IGNORE_INDEX] * len(ids)
    for start, end, weight in _answer_spans(tokenizer, messages, template, text, ids, tools):
        if weight:
            labels[start:end] = ids[start:end]
    return labels


def _all_labels(
    tokenizer: Any, messages: list[Message], template: str, text: str, ids: list[int], tools: Tools
) -> list[int]:
    labels = list(ids)
    if all(m.get("loss_weight", 1.0) for m in messages if m["role"] == "assistant"):
        return labels  # no turn to leave out: no spans needed (any template works)
    for start, end, weight in _answer_spans(tokenizer, messages, template, text, ids, tools):
        if not weight:
            labels[start:end] = [IGNORE_INDEX] * (end - start)
    return labels


LABELERS: dict[str, Callable[[Any, list[Message], str, str, list[int], Tools], list[int]]] = {
    "response": _response_labels,
    "all": _all_labels,
}
"""data.loss_on -> how labels are made from the token ids."""


def tokenize_conversation(
    tokenizer: Any,
    messages: list[Message],
    max_length: int,
    loss_on: str = "response",
    *,
    chat_template: str | None = None,
    tools: Tools = None,
) -> dict[str, Any] | None:
    """Token ids and labels of one conversation, truncated to ``max_length``.

    Returns {"input_ids", "labels", "truncated"}, or None when no label token is left (e.g. the
    answer was truncated away); ``chat_template`` defaults to the tokenizer's own.
    """
    if loss_on not in LABELERS:
        raise unknown("data.loss_on", loss_on, list(LABELERS))
    template = chat_template or tokenizer_template(tokenizer)
    if tools or any(m.get("tool_calls") for m in messages):
        check_tool_support(tokenizer, messages, template, tools)
    text = render(tokenizer, messages, template, tools=tools)
    ids = _token_ids(tokenizer, [text])[text]
    labels = LABELERS[loss_on](tokenizer, messages, template, text, ids, tools)
    truncated = len(ids) > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return {"input_ids": ids, "labels": labels, "truncated": truncated}
