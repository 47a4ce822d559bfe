"""Greedy generation and log-likelihood scoring, shared by the benchmarks.

Prompts are rendered with the run's chat template (the layout the model was fine-tuned on). A generation
ends at an end-of-turn token: the tokenizer's EOS, plus the special token the template writes right after
an assistant message (``<|im_end|>`` for ChatML) when that differs; whether it *did* end there, rather
than running to ``max_new_tokens``, is the "stops at EOS" check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from oneml.data.templates import render

_PROBE = "Zq7Zq"  # an assistant message whose text cannot occur in any template


@dataclass(frozen=True)
class Generated:
    text: str
    """The new text, cut at the first stop string."""
    new_tokens: int
    stopped: bool
    """True when an end-of-turn token ended it (not max_new_tokens, not a stop string)."""


def end_of_turn_ids(tokenizer: Any, template: str) -> list[int]:
    """EOS and the special token the template closes an assistant turn with."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    text = render(tokenizer, messages, template)
    tail = text.split(_PROBE, 1)[-1]
    tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail.strip() else []
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    if tail_ids and tail_ids[0] in special:
        ids.add(tail_ids[0])
    return sorted(ids)


def chat_prompt(tokenizer: Any, template: str, messages: list[dict[str, str]]) -> str:
    return render(tokenizer, messages, template, add_generation_prompt=True)


class _StopStrings:
    """Ends a row once its new text contains a stop string (checked on the decoded tail)."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_len: int):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, list(stops), prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs) -> torch.Tensor:
        tails = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :][:, -24:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in tails], device=input_ids.device)


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    end_ids: Sequence[int],
    max_new_tokens: int = 256,
    batch_size: int = 8,
    stop_strings: Sequence[str] = (),
    progress: Any = None,
) -> list[Generated]:
    """Greedy continuations of ``prompts`` (text already laid out, special tokens included)."""
    from transformers import StoppingCriteriaList

    results: list[Generated] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # new tokens must line up at the right end of every row
    device = next(model.parameters()).device
    try:
        for i in range(0, len(prompts), batch_size):
            chunk = list(prompts[i : i + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            width = enc["input_ids"].shape[1]
            criteria = StoppingCriteriaList([_StopStrings(tokenizer, stop_strings, width)]) if stop_strings else None
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=list(end_ids),
                pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=criteria,
            )
            results.extend(_decode_row(tokenizer, row[width:].tolist(), end_ids, stop_strings) for row in out)
            if progress is not None:
                progress(len(chunk))
    finally:
        tokenizer.padding_side = side
    return results


def _decode_row(tokenizer: Any, new: list[int], end_ids: Sequence[int], stop_strings: Sequence[str]) -> Generated:
    ends = [j for j, t in enumerate(new) if t in set(end_ids)]
    kept = new[: ends[0]] if ends else new
    text = tokenizer.decode(kept, skip_special_tokens=True)
    cut = False
    for stop in stop_strings:
        cut = cut or stop in text
        text = text.split(stop, 1)[0]
    # A row ended by a stop string is padded afterwards, and the pad may be the EOS token itself.
    return Generated(text=text, new_tokens=len(kept) + (1 if ends else 0), stopped=bool(ends) and not cut)


@torch.no_grad()
def continuation_logprobs(model: Any, tokenizer: Any, context: str, continuations: Sequence[str]) -> list[float]:
    """Sum of log p(continuation tokens | context) for each continuation, in one batch.

    Tokenized the way lm-eval does it: the whole text is encoded, and the continuation is what follows the
    context's own encoding, so a merge across the boundary cannot drop or double a token.
    """
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    rows, spans = [], []
    for cont in continuations:
        whole = tokenizer(context + cont, add_special_tokens=False)["input_ids"]
        start = len(context_ids) if whole[: len(context_ids)] == context_ids else _common_prefix(whole, context_ids)
        start = max(1, min(start, len(whole) - 1))  # at least one token scored, one token of context
        rows.append(whole)
        spans.append((start, len(whole)))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id or 0
    device = next(model.parameters()).device
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (C, T, V)
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (C, T-1)
    return [float(logps[c, s - 1 : e - 1].sum()) for c, (s, e) in enumerate(spans)]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
