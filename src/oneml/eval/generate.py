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

from oneml.data.templates import IGNORE_INDEX, render

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
def token_logprobs(model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(log p(label_t | ids_<t), top-1 == label, label mask), each (B, T-1), for labels aligned with ``ids``.

    Through the training's chunked LM head when the model allows it (`oneml.models.lm_head`), so the
    (B, T, V) logits never exist: at a 150k vocabulary they are gigabytes per batch. Otherwise the plain logits.
    """
    from oneml.models.lm_head import install_chunked_head, unsupported_reason

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if unsupported_reason(inner) is None:
        saved = inner.__dict__.get("forward")
        install_chunked_head(model, stats=("is_top1",))
        try:
            out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        finally:  # leave the model as it was: generation and merging come after
            inner.__dict__.pop("_oneml_chunked_head", None)
            if saved is None:
                del inner.forward
            else:
                inner.forward = saved
        return out.log_probs.float(), out.is_top1, out.label_mask
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    logps = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return logps * keep, (logits.argmax(-1) == target) & keep, keep


def continuation_logprobs(model: Any, tokenizer: Any, context: str, continuations: Sequence[str]) -> list[float]:
    """Sum of log p(continuation tokens | context) for each continuation, in one batch.

    Tokenized the way lm-eval does it: the whole text is encoded, and the continuation is what follows the
    context's own encoding, so a merge across the boundary cannot drop or double a token.
    """
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    rows, labels = [], []
    for cont in continuations:
        whole = tokenizer(context + cont, add_special_tokens=False)["input_ids"]
        start = len(context_ids) if whole[: len(context_ids)] == context_ids else _common_prefix(whole, context_ids)
        start = max(1, min(start, len(whole) - 1))  # at least one token scored, one token of context
        rows.append(whole)
        labels.append([IGNORE_INDEX] * start + whole[start:])
    logps, _, _ = token_logprobs(model, *padded(rows, labels, tokenizer.pad_token_id or 0, model))
    return [float(row.sum()) for row in logps]


def padded(rows: list[list[int]], labels: list[list[int]], pad: int, model: Any) -> tuple[torch.Tensor, ...]:
    """input_ids, attention_mask, labels as right-padded tensors on the model's device."""
    device = next(model.parameters()).device
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    target = torch.tensor([y + [IGNORE_INDEX] * (width - len(y)) for y in labels], device=device)
    return ids, mask, target


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
