"""Row formats: each turns one raw row into a conversation (for SFT), a preference pair, or unpaired examples (KTO).

A conversation is a list of messages (`oneml.data.messages`: role, text content, and where the row says so a
loss weight and tool calls) plus the row's tool definitions. A preference pair is the prompt conversation plus
the chosen and the rejected answer texts; an unpaired example is a prompt, one answer and whether that answer
is desirable (KTO's data: ``label``).

`FORMATS` maps a format name to its detector and converters; `detect_format` asks the detectors, the formats
with pairs or labels first, and the config's list of allowed names (data.format) derives from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oneml.data.messages import Message, RowProblem, as_text, parse_message, tools_of
from oneml.errors import OnemlError
from oneml.registry import Registry

Row = dict[str, Any]
Tools = list[dict[str, Any]]


@dataclass(frozen=True)
class Conversation:
    """What SFT learns from: the messages (the assistant turns are the answers) and the row's tools."""

    messages: list[Message]
    tools: Tools | None = None
    """Tool (function) definitions the chat template renders (``apply_chat_template(tools=...)``)."""


@dataclass(frozen=True)
class PreferencePair:
    prompt: list[Message]
    """The conversation before the answer (at least one user message)."""
    chosen: str
    """The preferred answer's text."""
    rejected: str
    """The dispreferred answer's text."""
    tools: Tools | None = None
    """The row's tool definitions, rendered with the prompt."""


@dataclass(frozen=True)
class UnpairedExample:
    """One answer judged on its own (KTO): desirable (label True) or not. TRL's KTO data is prompt/completion/label."""

    prompt: list[Message]
    completion: str
    label: bool
    tools: Tools | None = None


class MissingField(RowProblem):
    def __init__(self, name: str):
        super().__init__(name)
        self.field = name


@dataclass(frozen=True)
class Format:
    detect: Callable[[Row], bool]
    """True when a row has the fields of this format."""
    to_conversation: Callable[[Row], list[Message]] | None = None
    """Row -> conversation (the last assistant message is the response); None for rows SFT cannot learn from."""
    to_pair: Callable[[Row], PreferencePair] | None = None
    """Row -> preference pair; None for formats without chosen/rejected answers."""
    to_unpaired: Callable[[Row], list[UnpairedExample]] | None = None
    """Row -> unpaired examples (a pair gives two: chosen desirable, rejected not); None without judged answers."""

    @property
    def judged(self) -> bool:
        """Rows that say which answer is good (pairs or labels): detected before the plain conversations."""
        return self.to_pair is not None or self.to_conversation is None


# --------------------------------------------------------------------------- field helpers


def _text(row: Row, name: str, required: bool = True) -> str:
    """The text in ``row[name]``; None counts as empty (hub and parquet rows use None for blanks)."""
    if name not in row:
        if required:
            raise MissingField(name)
        return ""
    return as_text(row[name], repr(name))


def _messages(value: Any, name: str) -> list[Message]:
    if not isinstance(value, list):
        raise RowProblem(f"{name!r} must be a list of messages, got {type(value).__name__}")
    return [parse_message(m, f"{name}[{i}]") for i, m in enumerate(value)]


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
        conversation.append({"role": "user", "content": as_text(turn[0], f"'history'[{i}][0]")})
        conversation.append({"role": "assistant", "content": as_text(turn[1], f"'history'[{i}][1]")})
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


# --------------------------------------------------------------------------- preference and unpaired


def _answer(value: Any, name: str) -> tuple[list[Message], str]:
    """(conversation before the answer, answer text) from a string, a message, or a conversation."""
    if value is None or isinstance(value, str):
        return [], value or ""
    if isinstance(value, dict):
        return [], _answer_text(parse_message(value, repr(name)), name)
    conversation = _messages(value, name)
    last = max((i for i, m in enumerate(conversation) if m["role"] == "assistant"), default=None)
    if last is None:
        raise RowProblem(f"{name!r} has no assistant message")
    return conversation[:last], _answer_text(conversation[last], name)


def _answer_text(message: Message, name: str) -> str:
    if message.get("tool_calls"):  # the pair and KTO losses score an answer's text
        raise RowProblem(f"{name!r} answers with a tool call; judged answers must be text")
    return message["content"]


def _prompt(row: Row) -> list[Message]:
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        return _messages(prompt, "prompt")
    if prompt is not None:
        return [{"role": "user", "content": as_text(prompt, "'prompt'")}]
    for name in ("conversations", "messages"):
        if name in row:
            return _messages(row[name], name)
    if "instruction" in row:  # LLaMA-Factory's alpaca-style preference rows
        user = _user_turn(_text(row, "instruction"), _text(row, "input", required=False))
        return [{"role": "user", "content": user}]
    raise MissingField("prompt")


def _same_turns(a: list[Message], b: list[Message]) -> bool:
    return [(m["role"], m["content"]) for m in a] == [(m["role"], m["content"]) for m in b]


def _pair(row: Row) -> PreferencePair:
    # LLaMA-Factory v1 writes chosen_messages/rejected_messages: two whole conversations sharing their prompt.
    names = ("chosen_messages", "rejected_messages") if "chosen_messages" in row else ("chosen", "rejected")
    for name in names:
        if name not in row:
            raise MissingField(name)
    before, chosen = _answer(row[names[0]], names[0])
    before_rejected, rejected = _answer(row[names[1]], names[1])
    if before and before_rejected and not _same_turns(before, before_rejected):
        raise RowProblem(f"{names[0]!r} and {names[1]!r} differ before their answers; a pair shares one prompt")
    # UltraFeedback-style rows hold whole conversations: what precedes the chosen answer is the prompt
    # (multi-turn included), which the bare 'prompt' string would lose.
    prompt = before or _prompt(row)
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, tools=tools_of(row))


def _pair_as_conversation(row: Row) -> list[Message]:
    """SFT on a preference dataset: learn the chosen answer."""
    pair = _pair(row)
    return [*pair.prompt, {"role": "assistant", "content": pair.chosen}]


def _pair_as_unpaired(row: Row) -> list[UnpairedExample]:
    """KTO on a preference dataset: the chosen answer is desirable, the rejected one is not (TRL's
    ``unpair_preference_dataset``)."""
    pair = _pair(row)
    return [
        UnpairedExample(pair.prompt, pair.chosen, True, pair.tools),
        UnpairedExample(pair.prompt, pair.rejected, False, pair.tools),
    ]


def _unpaired(row: Row) -> list[UnpairedExample]:
    """A KTO row: ``prompt`` + ``completion`` (text or messages), or ``messages`` ending in the answer; + ``label``."""
    label = row.get("label")
    if not isinstance(label, bool):
        raise RowProblem(f"'label' must be true or false (is the answer desirable?), got {label!r}")
    if "completion" in row:
        before, completion = _answer(row["completion"], "completion")
        prompt = [*_prompt(row), *before]
    else:
        name = "messages" if "messages" in row else "conversations"
        if name not in row:
            raise MissingField("completion")
        prompt, completion = _answer(row[name], name)
    return [UnpairedExample(prompt=prompt, completion=completion, label=label, tools=tools_of(row))]


def _is_unpaired(row: Row) -> bool:
    return isinstance(row.get("label"), bool) and any(k in row for k in ("completion", "messages", "conversations"))


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
    "messages (or conversations): [{role: system|user|assistant|tool, content (text or parts), loss_weight, "
    "tool_calls}], optional tools",
)
FORMATS.register(
    "sharegpt",
    Format(detect=lambda r: _first_message_has(r, ("conversations",), "from"), to_conversation=_sharegpt),
    "conversations: [{from: human|gpt|system|function_call|observation, value}], optional tools",
)
FORMATS.register(
    "preference",
    Format(
        detect=lambda r: ("chosen" in r and "rejected" in r) or ("chosen_messages" in r and "rejected_messages" in r),
        to_conversation=_pair_as_conversation,
        to_pair=_pair,
        to_unpaired=_pair_as_unpaired,
    ),
    "prompt (text or messages) + chosen/rejected answers (text, message, or whole conversation), or "
    "chosen_messages/rejected_messages",
)
FORMATS.register(
    "kto",
    Format(detect=_is_unpaired, to_unpaired=_unpaired),
    "unpaired answers: prompt + completion, or messages ending in the answer; label: true (desirable) | false",
)


# --------------------------------------------------------------------------- whole datasets


def detect_format(row: Row, dataset: str = "the dataset") -> str:
    """The first format whose detector accepts ``row`` (the dataset's first row).

    Formats with judged answers (pairs, labels) are asked first: a row with two answers to compare, or one
    answer labelled good or bad, is that even when it also carries a conversation (UltraFeedback rows have
    ``messages`` too, KTO rows often are ``messages`` + ``label``).
    """
    for entry in sorted(FORMATS.entries(), key=lambda e: not e.value.judged):
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


def _has_answer(messages: list[Message]) -> bool:
    last = messages[-1] if messages else None
    return last is not None and last["role"] == "assistant" and bool(last["content"].strip() or last.get("tool_calls"))


def to_conversations(rows: list[Row], fmt: str, dataset: str) -> Converted:
    """Conversations for SFT; those without a final assistant message (text or tool call) are skipped."""
    convert = FORMATS.get(fmt).to_conversation
    if convert is None:
        raise OnemlError(f"data.format: {fmt} rows are not conversations to learn from; use an SFT format")
    out = Converted()
    for i, row in enumerate(rows):
        messages = _convert(convert, row, i, dataset, fmt)
        if not _has_answer(messages):
            out.skipped_empty += 1
            continue
        tools = _convert(tools_of, row, i, dataset, fmt)
        out.items.append(Conversation(messages, tools))
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


def to_unpaired(rows: list[Row], fmt: str, dataset: str) -> Converted:
    """Unpaired examples (KTO), grouped by row: a pair's two answers are one item, so that a split keeps them together
    (the held-out pairs are then the ones a DPO run on the same data holds out). A row with an empty prompt or answer
    is skipped (counted)."""
    convert = FORMATS.get(fmt).to_unpaired
    if convert is None:
        judged = [e.name for e in FORMATS.entries() if e.value.to_unpaired is not None]
        raise OnemlError(f"data.format: {fmt} rows have no answers labelled desirable or not; use {', '.join(judged)}")
    out = Converted()
    for i, row in enumerate(rows):
        examples = _convert(convert, row, i, dataset, fmt)
        if any(not any(m["content"].strip() for m in e.prompt) or not e.completion.strip() for e in examples):
            out.skipped_empty += 1
        else:
            out.items.append(examples)
    return out
