"""One message of a conversation, read from the shapes datasets use, into the one shape the chat template gets.

    {"role": "system" | "user" | "assistant" | "tool", "content": str}
      + "loss_weight": 0.0 | 1.0          only when the row says whether the turn is learned
      + "tool_calls": [{"type": "function", "function": {"name", "arguments"}}], "tool_call_id", "name"

Accepted on the way in:

- {role, content} (OpenAI, TRL) and ShareGPT's {from, value}; ShareGPT's ``function_call`` turn (a JSON tool
  call) becomes an assistant message with ``tool_calls`` and ``observation`` a ``tool`` message (LLaMA-Factory);
- content as text, or as a list of parts: OpenAI's ``{type: text, text}`` and LLaMA-Factory v1's
  ``{type: text, value}``, joined in order (templates render consecutive text parts back to back), and
  LLaMA-Factory v1's ``{type: tool_call(s), value: <JSON>}`` parts as tool calls. Other parts (image_url,
  audio, ...) are refused: the models trained here read text only;
- whether a turn is learned: ``loss_weight`` (LLaMA-Factory v1), ``weight`` (Axolotl ShareGPT), ``train`` or
  ``training`` (Axolotl chat_template), as 0/1 or true/false. The SFT loss can only mask tokens, not weight
  them, so any other value is refused rather than rounded. A 1 belongs on assistant turns (the default for
  them); on other roles only 0 is accepted, which is what they are anyway.
"""

from __future__ import annotations

import json
from typing import Any

Message = dict[str, Any]

ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function_call": "assistant",
}
"""Role names as datasets spell them (ShareGPT: human/gpt/observation/function_call) -> the chat-template role."""

WEIGHT_KEYS = ("loss_weight", "weight", "train", "training")
"""Per-message keys that say whether a turn is learned (LLaMA-Factory v1, Axolotl)."""

TEXT_PARTS = {"text"}
TOOL_CALL_PARTS = {"tool_call", "tool_calls"}
PASSED_THROUGH = ("tool_call_id", "name")
"""Keys of tool messages the chat templates read, kept as they are."""


class RowProblem(Exception):
    """A row that cannot be converted; the caller adds the dataset name, row index and format."""


def as_text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RowProblem(f"{where} must be text, got {type(value).__name__}")


def parse_message(obj: Any, where: str) -> Message:
    """A message from any accepted shape (see the module docstring); ``where`` names it in errors."""
    if not isinstance(obj, dict):
        raise RowProblem(f"{where} must be a message object, got {type(obj).__name__}")
    role_key, content_key = ("role", "content") if "role" in obj else ("from", "value")
    if role_key not in obj:
        raise RowProblem(f"{where} has neither 'role' nor 'from'")
    spelled = str(obj[role_key]).lower()
    role = ROLES.get(spelled)
    if role is None:
        raise RowProblem(f"{where} has unknown role {obj[role_key]!r}; known: {', '.join(ROLES)}")
    if spelled == "function_call":  # ShareGPT: the value is the call itself, as JSON
        text, calls = "", tool_calls(_json(obj.get(content_key), f"{where}.{content_key}"), where)
    else:
        text, calls = content(obj.get(content_key), f"{where}.{content_key}")
    message: Message = {"role": role, "content": text}
    calls += tool_calls(obj["tool_calls"], f"{where}.tool_calls") if obj.get("tool_calls") else []
    if calls:
        if role != "assistant":
            raise RowProblem(f"{where} is a {role} message with tool calls; only assistant messages make them")
        message["tool_calls"] = calls
    message.update({k: obj[k] for k in PASSED_THROUGH if obj.get(k) is not None})
    weight = loss_weight(obj, where)
    if weight is not None:
        if weight and role != "assistant":
            raise RowProblem(
                f"{where} is a {role} message marked to be learned; only assistant turns are (data.loss_on: all "
                "learns every token)"
            )
        message["loss_weight"] = weight
    return message


def content(value: Any, where: str) -> tuple[str, list[dict[str, Any]]]:
    """(text, tool calls) of a message's content: text, None, or a list of parts."""
    if not isinstance(value, list):
        return as_text(value, where), []
    texts, calls = [], []
    for j, part in enumerate(value):
        at = f"{where}[{j}]"
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        if kind is None and isinstance(part, dict) and ("text" in part or "value" in part):
            kind = "text"  # an untyped part holding text
        if kind in TEXT_PARTS:
            texts.append(as_text(part.get("text", part.get("value")), f"{at}.text"))
        elif kind in TOOL_CALL_PARTS:
            calls += tool_calls(_json(part.get("value", part.get(kind)), f"{at}.value"), at)
        elif isinstance(part, dict):
            raise RowProblem(
                f"{at} is a {kind!r} part; only text parts (and tool calls) are read: the models are text-only"
            )
        else:
            raise RowProblem(f"{at} must be a content part {{type, text}}, got {type(part).__name__}")
    return "".join(texts), calls


def tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    """Tool calls in the OpenAI shape {type: function, function: {name, arguments}}, from that shape or from a bare
    {name, arguments} (ShareGPT, LLaMA-Factory). JSON-string arguments become objects: HF templates dump them."""
    items = value if isinstance(value, list) else [value]
    calls = []
    for k, item in enumerate(items):
        at = f"{where}[{k}]" if isinstance(value, list) else where
        call = item.get("function", item) if isinstance(item, dict) else None
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise RowProblem(f"{at} must be a tool call {{name, arguments}}, got {_clip(item)}")
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                raise RowProblem(f"{at}.arguments is not valid JSON: {_clip(arguments)}") from None
        out = {"type": "function", "function": {"name": call["name"], "arguments": arguments}}
        if isinstance(item, dict) and item.get("id") is not None:
            out["id"] = item["id"]
        calls.append(out)
    return calls


def loss_weight(obj: dict[str, Any], where: str) -> float | None:
    """0.0 or 1.0 when the message says whether it is learned, None when it does not."""
    found = {key: obj[key] for key in WEIGHT_KEYS if obj.get(key) is not None}
    weights = {key: _weight(value, f"{where}.{key}") for key, value in found.items()}
    if len(set(weights.values())) > 1:
        listed = ", ".join(f"{k}={v!r}" for k, v in found.items())
        raise RowProblem(f"{where} says both {listed}; keep one")
    return next(iter(weights.values()), None)


def _weight(value: Any, where: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return float(value)
    raise RowProblem(
        f"{where} must be 0 or 1 (or true/false), got {_clip(value)}: the SFT loss masks tokens, it does not "
        "weight them"
    )


def tools_of(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The row's tool (function) definitions: a list, or a JSON string of one (LLaMA-Factory); None without."""
    tools = row.get("tools")
    if tools is None or tools == "" or tools == []:
        return None
    if isinstance(tools, str):
        tools = _json(tools, "'tools'")
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise RowProblem(f"'tools' must be a list of tool definitions (JSON schema objects), got {_clip(tools)}")
    return tools


def with_system_prompt(messages: list[Message], system_prompt: str | None) -> list[Message]:
    """``system_prompt`` as a first system message, unless there is none or the conversation has its own."""
    if not system_prompt or any(m["role"] == "system" for m in messages):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def for_template(messages: list[Message]) -> list[Message]:
    """The messages without oneml's own keys (a template might print a key it does not know)."""
    return [{k: v for k, v in m.items() if k != "loss_weight"} for m in messages]


def _json(value: Any, where: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise RowProblem(f"{where} is not valid JSON ({err.msg}): {_clip(value)}") from None


def _clip(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
