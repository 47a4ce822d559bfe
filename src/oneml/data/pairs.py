"""Preference pairs and unpaired (KTO) examples as the strings TRL's trainers read, cut to fit data.max_length.

prompt     = the prompt conversation rendered with the chat template (and the row's tools) and its generation
             prompt;
completion = the answer text followed by what the template writes up to its end-of-turn (e.g. ``<|im_end|>``).

An example longer than ``max_length`` tokens (L) is truncated the way TRL's ``max_prompt_length`` /
``max_completion_length`` did (before TRL 1 kept only the start of the whole sequence), instead of being
dropped: the answers keep their start and are cut to a completion budget, the prompt keeps its end (the
question and the generation prompt closest to the answer). One difference: the room a short prompt leaves goes
to the answers (TRL capped them at L - max_prompt_length regardless):

    C = longest answer (tokens), P = prompt (tokens), B = data.max_completion_length (default L // 2)
    keep_c = min(C, max(B, L - P))      # a short prompt leaves its unused room to the answers
    keep_p = L - keep_c                 # the prompt keeps its last keep_p tokens

Both answers of a pair are cut to keep_c and share one cut prompt, so every sequence is at most L tokens,
counted as TRL's trainers count them (the tokenizer's own special tokens included). Cut pieces are decoded
back to text; should the text re-tokenize longer (a merge across the cut), the cut moves by the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oneml.data.messages import with_system_prompt
from oneml.data.templates import check_tool_support, render
from oneml.errors import OnemlError

if TYPE_CHECKING:
    from oneml.data.formats import PreferencePair, UnpairedExample
    from oneml.data.messages import Message

MAX_RETRIES = 8
"""Re-cuts tried when decoded text re-tokenizes longer than the cut; more means a tokenizer that never settles."""


@dataclass(frozen=True)
class Budget:
    max_length: int
    """L: the longest prompt + answer, in tokens."""
    completion: int
    """B: what an answer keeps when the prompt is long."""


def render_prompt(tokenizer: Any, messages: list[Message], template: str, tools: Any) -> str:
    if tools or any(m.get("tool_calls") for m in messages):
        check_tool_support(tokenizer, messages, template, tools)
    return render(tokenizer, messages, template, add_generation_prompt=True, tools=tools)


def completion(tokenizer: Any, messages: list[Message], prompt: str, answer: str, template: str, tools: Any) -> str:
    """The answer plus what the template writes after it up to the end-of-turn (layout whitespace dropped)."""
    full = render(tokenizer, [*messages, {"role": "assistant", "content": answer}], template, tools=tools)
    if not full.startswith(prompt):
        raise OnemlError(
            "data.chat_template: the rendered prompt is not a prefix of the rendered conversation, so the "
            "answer cannot be cut out; set data.chat_template: chatml"
        )
    rest = full[len(prompt) :]
    if rest.startswith(answer):
        return answer + rest[len(answer) :].rstrip()
    return rest.rstrip()


def render_pair(tokenizer: Any, pair: PreferencePair, template: str, system_prompt: str | None) -> dict[str, str]:
    messages = with_system_prompt(pair.prompt, system_prompt)
    prompt = render_prompt(tokenizer, messages, template, pair.tools)
    return {
        "prompt": prompt,
        "chosen": completion(tokenizer, messages, prompt, pair.chosen, template, pair.tools),
        "rejected": completion(tokenizer, messages, prompt, pair.rejected, template, pair.tools),
    }


def render_unpaired(tokenizer: Any, example: UnpairedExample, template: str, system_prompt: str | None) -> dict:
    messages = with_system_prompt(example.prompt, system_prompt)
    prompt = render_prompt(tokenizer, messages, template, example.tools)
    answer = completion(tokenizer, messages, prompt, example.completion, template, example.tools)
    return {"prompt": prompt, "completion": answer, "label": example.label}


def fit_all(tokenizer: Any, rows: list[dict[str, Any]], sides: tuple[str, ...], budget: Budget) -> tuple[list, int]:
    """(the rows with prompts and the answers named by ``sides`` cut to the budget, how many rows were cut)."""
    texts = [text for row in rows for text in (row["prompt"], *(row["prompt"] + row[side] for side in sides))]
    ids = iter(tokenizer(texts)["input_ids"] if texts else [])  # one batch: fast tokenizers run it in parallel
    out, cut = [], 0
    for row in rows:
        prompt_ids = next(ids)
        answers = {side: _after_prefix(prompt_ids, next(ids)) for side in sides}
        if len(prompt_ids) + max(len(a) for a in answers.values()) <= budget.max_length:
            out.append(row)
        else:
            out.append(_cut(tokenizer, row, prompt_ids, answers, budget))
            cut += 1
    return out, cut


def _cut(
    tokenizer: Any, row: dict[str, Any], prompt_ids: list[int], answers: dict[str, list[int]], budget: Budget
) -> dict[str, Any]:
    """The row cut as the module docstring says, re-cut while its decoded text tokenizes longer than the budget."""
    keep_c = min(max(len(a) for a in answers.values()), max(budget.completion, budget.max_length - len(prompt_ids)))
    keep_p = budget.max_length - keep_c
    for _ in range(MAX_RETRIES):
        if keep_p < 1:
            break
        cut = dict(row)
        if len(prompt_ids) > keep_p:
            cut["prompt"] = _decode(tokenizer, prompt_ids[len(prompt_ids) - keep_p :]).lstrip("\ufffd")
        for side, ids in answers.items():
            if len(ids) > keep_c:
                cut[side] = _decode(tokenizer, ids[:keep_c]).rstrip("\ufffd")
        over = max(len(_ids(tokenizer, cut["prompt"] + cut[side])) for side in answers) - budget.max_length
        if over <= 0:
            return cut
        # A merge across the cut (or a split character) made the text longer: take the difference off the answers
        # while they keep a token, else off the prompt.
        keep_c, keep_p = (keep_c - over, keep_p) if keep_c > over else (keep_c, keep_p - over)
    raise OnemlError(
        f"data.max_length: an example does not tokenize within {budget.max_length} tokens after {MAX_RETRIES} cuts "
        "(its decoded text keeps re-tokenizing longer); raise data.max_length"
    )


def _ids(tokenizer: Any, text: str) -> list[int]:
    # As TRL's trainers tokenize a string: with the tokenizer's own special tokens (a BOS, where it adds one).
    return tokenizer(text)["input_ids"]


def _after_prefix(prompt_ids: list[int], full: list[int]) -> list[int]:
    """The answer's tokens as TRL finds them: what follows the common prefix of prompt and prompt + answer."""
    n = 0
    while n < min(len(full), len(prompt_ids)) and full[n] == prompt_ids[n]:
        n += 1
    return full[n:]


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
