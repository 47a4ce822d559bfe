"""Row formats: each turns one raw row into a conversation (for SFT) or a preference pair.

A conversation is a list of messages ``{"role": "system" | "user" | "assistant", "content": str}``.
A preference pair is the prompt conversation plus the chosen and the rejected answer texts.

`FORMATS` maps a format name to its detector and converters; `detect_format` asks the detectors,
preference formats first, and the config's list of allowed names (data.format) derives from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oneml.errors import OnemlError
from oneml.registry import Registry

Row = dict[str, Any]
Message = dict[str, str]

ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
}
"""Role names as datasets spell them (ShareGPT: human/gpt) -> the chat-template role."""


@dataclass(frozen=True)
class PreferencePair:
    prompt: list[Message]
    """The conversation before the answer (at least one user message)."""
    chosen: str
    """The preferred answer's text."""
    rejected: str
    """The dispreferred answer's text."""


class RowProblem(Exception):
    """A row that cannot be converted; the caller adds the dataset name, row index and format."""


class MissingField(RowProblem):
    def __init__(self, name: str):
        super().__init__(name)
        self.field = name


@dataclass(frozen=True)
class Format:
    detect: Callable[[Row], bool]
    """True when a row has the fields of this format."""
    to_conversation: Callable[[Row], list[Message]]
    """Row -> conversation (the last assistant message is the response)."""
    to_pair: Callable[[Row], PreferencePair] | None = None
    """Row -> preference pair; None for formats without chosen/rejected answers."""


# --------------------------------------------------------------------------- field helpers


def _text(row: Row, name: str, required: bool = True) -> str:
    """The text in ``row[name]``; None counts as empty (hub and parquet rows use None for blanks)."""
    if name not in row:
        if required:
            raise MissingField(name)
        return ""
    return _as_text(row[name], repr(name))


def _as_text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RowProblem(f"{where} must be text, got {type(value).__name__}")


def _message(obj: Any, where: str) -> Message:
    """A message from {role, content} or ShareGPT's {from, value}."""
    if not isinstance(obj, dict):
        raise RowProblem(f"{where} must be a message object, got {type(obj).__name__}")
    role_key, content_key = ("role", "content") if "role" in obj else ("from", "value")
    if role_key not in obj:
        raise RowProblem(f"{where} has neither 'role' nor 'from'")
    role = ROLES.get(str(obj[role_key]).lower())
    if role is None:
        raise RowProblem(f"{where} has unknown role {obj[role_key]!r}; known: {', '.join(ROLES)}")
    return {"role": role, "content": _as_text(obj.get(content_key), f"{where}.{content_key}")}


def _messages(value: Any, name: str) -> list[Message]:
    if not isinstance(value, list):
        raise RowProblem(f"{name!r} must be a list of messages, got {type(value).__name__}")
    return [_message(m, f"{name}[{i}]") for i, m in enumerate(value)]


def _first_message_has(row: Row, names: tuple[str, ...], key: str) -> bool:
    for name in names:
        value = row.get(name)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return key in value[0]
    return False


def _user_turn(instruction: str, extra: str) -> str:
    """The instruction, then the optional input/context after a blank line."""
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


# --------------------------------------------------------------------------- SFT formats


def _alpaca(row: Row) -> list[Message]:
    instruction, output = _text(row, "instruction"), _text(row, "output")
    conversation: list[Message] = []
    system = _text(row, "system", required=False)
    if system.strip():
        conversation.append({"role": "system", "content": system})
    history = row.get("history") or []
    if not isinstance(history, list):
        raise RowProblem("'history' must be a list of [question, answer] pairs")
    for i, turn in enumerate(history):
        if not isinstance(turn, (list, tuple)) or len(turn) != 2:
            raise RowProblem(f"'history'[{i}] must be a [question, answer] pair")
        conversation.append({"role": "user", "content": _as_text(turn[0], f"'history'[{i}][0]")})
        conversation.append({"role": "assistant", "content": _as_text(turn[1], f"'history'[{i}][1]")})
    conversation.append({"role": "user", "content": _user_turn(instruction, _text(row, "input", required=False))})
    conversation.append({"role": "assistant", "content": output})
    return conversation


def _dolly(row: Row) -> list[Message]:
    instruction, response = _text(row, "instruction"), _text(row, "response")
    user = _user_turn(instruction, _text(row, "context", required=False))
    return [{"role": "user", "content": user}, {"role": "assistant", "content": response}]


def _chat(row: Row) -> list[Message]:
    name = "messages" if "messages" in row else "conversations"
    if name not in row:
        raise MissingField("messages")
    return _messages(row[name], name)


def _sharegpt(row: Row) -> list[Message]:
    if "conversations" not in row:
        raise MissingField("conversations")
    return _messages(row["conversations"], "conversations")


# --------------------------------------------------------------------------- preference


def _answer(value: Any, name: str) -> tuple[list[Message], str]:
    """(conversation before the answer, answer text) from a string, a message, or a conversation."""
    if value is None or isinstance(value, str):
        return [], value or ""
    if isinstance(value, dict):
        return [], _message(value, repr(name))["content"]
    conversation = _messages(value, name)
    last = max((i for i, m in enumerate(conversation) if m["role"] == "assistant"), default=None)
    if last is None:
        raise RowProblem(f"{name!r} has no assistant message")
    return conversation[:last], conversation[last]["content"]


def _prompt(row: Row) -> list[Message]:
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        return _messages(prompt, "prompt")
    if prompt is not None:
        return [{"role": "user", "content": _as_text(prompt, "'prompt'")}]
    for name in ("conversations", "messages"):
        if name in row:
            return _messages(row[name], name)
    if "instruction" in row:  # LLaMA-Factory's alpaca-style preference rows
        user = _user_turn(_text(row, "instruction"), _text(row, "input", required=False))
        return [{"role": "user", "content": user}]
    raise MissingField("prompt")


def _pair(row: Row) -> PreferencePair:
    for name in ("chosen", "rejected"):
        if name not in row:
            raise MissingField(name)
    before, chosen = _answer(row["chosen"], "chosen")
    _, rejected = _answer(row["rejected"], "rejected")
    # UltraFeedback-style rows hold whole conversations: what precedes the chosen answer is the prompt
    # (multi-turn included), which the bare 'prompt' string would lose.
    prompt = before or _prompt(row)
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected)


def _pair_as_conversation(row: Row) -> list[Message]:
    """SFT on a preference dataset: learn the chosen answer."""
    pair = _pair(row)
    return [*pair.prompt, {"role": "assistant", "content": pair.chosen}]


FORMATS: Registry[Format] = Registry("format")

FORMATS.register(
    "alpaca",
    Format(detect=lambda r: "instruction" in r and "output" in r, to_conversation=_alpaca),
    "instruction, input (optional), output; optional system and history [[q, a], ...]",
)
FORMATS.register(
    "dolly",
    Format(detect=lambda r: "instruction" in r and "response" in r, to_conversation=_dolly),
    "instruction, context (optional), response",
)
FORMATS.register(
    "messages",
    Format(detect=lambda r: _first_message_has(r, ("messages", "conversations"), "role"), to_conversation=_chat),
    "messages (or conversations): [{role: system|user|assistant, content}]",
)
FORMATS.register(
    "sharegpt",
    Format(detect=lambda r: _first_message_has(r, ("conversations",), "from"), to_conversation=_sharegpt),
    "conversations: [{from: human|gpt|system, value}]",
)
FORMATS.register(
    "preference",
    Format(detect=lambda r: "chosen" in r and "rejected" in r, to_conversation=_pair_as_conversation, to_pair=_pair),
    "prompt (text or messages) + chosen/rejected answers (text, message, or whole conversation)",
)


# --------------------------------------------------------------------------- whole datasets


def detect_format(row: Row, dataset: str = "the dataset") -> str:
    """The first format whose detector accepts ``row`` (the dataset's first row).

    Preference formats are asked first: a row with two answers to compare is a preference row even
    when it also carries a conversation (UltraFeedback rows have ``messages`` too).
    """
    for entry in sorted(FORMATS.entries(), key=lambda e: e.value.to_pair is None):
        if entry.value.detect(row):
            return entry.name
    fields = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
    raise OnemlError(
        f"data.format: cannot tell the format of {dataset} from its first row's fields ({fields}); "
        f"set data.format to one of {', '.join(FORMATS.names())}"
    )


@dataclass
class Converted:
    """Converted rows with what was skipped (counted, not fatal: a few blank answers are common)."""

    items: list[Any] = field(default_factory=list)
    skipped_empty: int = 0
    skipped_identical: int = 0


def _convert(convert: Callable[[Row], Any], row: Row, index: int, dataset: str, fmt: str) -> Any:
    try:
        return convert(row)
    except MissingField as err:
        raise OnemlError(f"data: row {index} of {dataset} has no {err.field!r} field (format {fmt})") from None
    except RowProblem as err:
        raise OnemlError(f"data: row {index} of {dataset}: {err} (format {fmt})") from None


def to_conversations(rows: list[Row], fmt: str, dataset: str) -> Converted:
    """Conversations for SFT; those without a non-empty final assistant message are skipped."""
    convert = FORMATS.get(fmt).to_conversation
    out = Converted()
    for i, row in enumerate(rows):
        conversation = _convert(convert, row, i, dataset, fmt)
        last = conversation[-1] if conversation else None
        if last is None or last["role"] != "assistant" or not last["content"].strip():
            out.skipped_empty += 1
            continue
        out.items.append(conversation)
    return out


def to_pairs(rows: list[Row], fmt: str, dataset: str) -> Converted:
    """Preference pairs; empty prompts or answers and chosen == rejected are skipped (nothing to learn from them)."""
    convert = FORMATS.get(fmt).to_pair
    if convert is None:
        preference = [e.name for e in FORMATS.entries() if e.value.to_pair is not None]
        raise OnemlError(f"data.format: {fmt} rows have no preference pairs; use {', '.join(preference)}")
    out = Converted()
    for i, row in enumerate(rows):
        pair = _convert(convert, row, i, dataset, fmt)
        prompt_empty = not any(m["content"].strip() for m in pair.prompt)
        if prompt_empty or not pair.chosen.strip() or not pair.rejected.strip():
            out.skipped_empty += 1
        elif pair.chosen.strip() == pair.rejected.strip():
            out.skipped_identical += 1
        else:
            out.items.append(pair)
    return out
