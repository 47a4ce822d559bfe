"""Chunked LM head + log-softmax: per-token log-probabilities without the (tokens x vocab) logits.

For hidden states h (N, H), the head W (V, H) and targets y (N,):

    log p(y_i | h_i) = z_i[y_i] - logsumexp_v z_i[v],     z_i = W h_i (+ b)

computed over chunks of tokens, so that at most (chunk, V) logits exist at a time; only the
log-sum-exp of each token is kept for the backward, which recomputes its chunk of logits and turns
it, in place, into the gradient of sum_i g_i log p_i with respect to z_i:

    dL/dz_i = g_i * (onehot(y_i) - softmax(z_i)),   dL/dh_i = dL/dz_i W,   dL/dW = sum_i dL/dz_i^T h_i

Per-token log-probs (not only a mean) are what SFT (token mean), DPO (per-sequence sums) and ORPO
(per-sequence means + chosen NLL) all need, so one function serves the three objectives.

Why our own rather than TRL's fused head (``trl.trainer.utils.add_fused_lm_head``): on devices
without Triton TRL scores every position (prompt and padding too) through 4096 x 32768 tiles with
several full-tile temporaries, which made a CPU step of a tiny model with a 49k vocabulary several
times slower than the plain logits (benchmarks/perf.py, BENCHMARKS.md). Here only labelled positions
are scored, in tiles of ~32 MiB, with one temporary. The model keeps TRL's calling convention
(``model(..., labels=..., fused_lm_head=True)`` returns TRL's ``FusedCausalLMOutput``), so TRL's
trainers and our evaluators run unchanged on top of it.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import torch

TILE_BYTES = 32 * 2**20
"""Bytes of fp32 logits per chunk: large enough for an efficient matmul, small enough to stay in cache-friendly,
reusable allocations (TRL's CPU tiles are 512 MiB)."""

STATS = ("entropy", "is_top1", "mean_logits")
"""No-gradient per-token statistics the head can also return (for the trainers' logs)."""


def _rows_per_chunk(vocab: int, chunk_rows: int | None) -> int:
    return chunk_rows or max(16, TILE_BYTES // (4 * vocab))


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    z = hidden @ weight.t() if bias is None else torch.addmm(bias, hidden, weight.t())  # (c, V)
    return z.float()  # a no-op in fp32; with bf16 weights the softmax runs in fp32


class ChunkedLogProb(torch.autograd.Function):
    """log p(targets | hidden) under the head (weight, bias), chunk by chunk; see the module docstring."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_rows, stats):  # hidden (N, H), targets (N,)
        n = hidden.shape[0]
        step = _rows_per_chunk(weight.shape[0], chunk_rows)
        logps = hidden.new_empty(n, dtype=torch.float32)
        lse = hidden.new_empty(n, dtype=torch.float32)
        extra = {name: hidden.new_empty(n, dtype=torch.float32) for name in stats}
        for s in range(0, n, step):
            e = min(s + step, n)
            z = _logits(hidden[s:e], weight, bias)  # (c, V)
            lse[s:e] = torch.logsumexp(z, dim=-1)
            target = z.gather(1, targets[s:e, None]).squeeze(1)
            logps[s:e] = target - lse[s:e]
            if "is_top1" in extra:
                extra["is_top1"][s:e] = (z.argmax(-1) == targets[s:e]).float()
            if "mean_logits" in extra:
                extra["mean_logits"][s:e] = z.mean(-1)
            if "entropy" in extra:  # H = lse - sum_v p_v z_v
                extra["entropy"][s:e] = lse[s:e] - (z.sub(lse[s:e, None]).exp_().mul_(z)).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.step = step
        for value in extra.values():
            ctx.mark_non_differentiable(value)
        return (logps, *(extra[name] for name in stats))

    @staticmethod
    def backward(ctx, grad_logps, *_):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        if grad_logps is None:
            return grad_h, grad_w, grad_b, None, None, None
        n, step = hidden.shape[0], ctx.step
        rows = torch.arange(min(step, n), device=hidden.device)
        for s in range(0, n, step):
            e = min(s + step, n)
            g = grad_logps[s:e].float()  # (c,)
            dz = _logits(hidden[s:e], weight, bias).sub_(lse[s:e, None]).exp_().mul_(-g[:, None])  # -g * p, (c, V)
            dz[rows[: e - s], targets[s:e]] += g
            if need_h:
                grad_h[s:e] = (dz.to(weight.dtype) @ weight).to(hidden.dtype)
            if need_w:
                grad_w.addmm_(dz.t(), hidden[s:e].float())
            if need_b:
                grad_b += dz.sum(0)
        cast = lambda x, like: None if x is None else x.to(like.dtype)  # noqa: E731
        return grad_h, cast(grad_w, weight), None if bias is None else cast(grad_b, bias), None, None, None


def chunked_log_probs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    chunk_rows: int | None = None,
    stats: tuple[str, ...] = (),
) -> tuple[torch.Tensor, ...]:
    """(log-probs (N,), *stats (N,) each) for hidden (N, H), weight (V, H), targets (N,)."""
    unknown = set(stats) - set(STATS)
    if unknown:
        raise ValueError(f"stats: unknown {sorted(unknown)}; known: {STATS}")
    return ChunkedLogProb.apply(hidden, weight, bias, targets, chunk_rows, tuple(stats))


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions; the drop-in for ``F.cross_entropy(W h, labels)``.

    hidden (N, H) and labels (N,) are already aligned (shifted); positions labelled -100 are skipped.
    """
    keep = labels != -100
    (logps,) = chunked_log_probs(hidden[keep], weight, labels[keep], bias)
    return -logps.sum() / keep.sum().clamp(min=1)


# --- the model-level head -----------------------------------------------------------------------------------------


def unsupported_reason(model: Any) -> str | None:
    """Why the chunked head cannot reproduce this model's logits exactly, or None when it can."""
    config = model.config.get_text_config()
    for key in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"):
        if getattr(config, key, None) not in (None, 1, 1.0):
            return f"the model scales its logits ({key}); the trainer's own head is used"
    if getattr(config, "output_router_logits", False):
        return "mixture-of-experts router loss; the trainer's own head is used"
    if model.get_output_embeddings() is None:
        return "the model has no output embedding"
    return None


def install_chunked_head(model: Any, stats: tuple[str, ...] = ("entropy", "is_top1")) -> None:
    """Serve ``model(..., labels=..., fused_lm_head=True)`` with `ChunkedLogProb`.

    ``model``: a transformers causal LM, or a peft model (the head goes on the model under it, where TRL
    puts its own). Install after the TRL trainer is built (its constructor adds its fused head, which
    this one replaces); calls without ``fused_lm_head`` (generation, plain logits) go to the previous forward.
    """
    from trl.trainer.utils import FusedCausalLMOutput

    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    previous = model.forward

    @functools.wraps(type(model).forward)  # generate() validates its kwargs against the original signature
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head or kwargs.get("output_router_logits"):
            given = dict(labels=labels, shift_labels=shift_labels, num_items_in_batch=num_items_in_batch)
            given |= {"fused_lm_head": True} if fused_lm_head else {}
            return previous(*args, **{k: v for k, v in given.items() if v is not None}, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state  # (B, T, H)
        if shift_labels is None:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        head = self.get_output_embeddings()
        labels = labels.to(head.weight.device)
        mask = labels != -100  # (B, T-1)
        picked = chunked_log_probs(
            hidden.to(head.weight.device)[mask], head.weight, labels[mask], head.bias, stats=stats
        )
        # masked_scatter keeps an all-ignored micro-batch connected to the graph (a differentiable zero).
        logps, *extra = (x.new_zeros(mask.shape).masked_scatter(mask, x) for x in picked)
        extra = dict(zip(stats, extra, strict=True))
        if "is_top1" in extra:
            extra["is_top1"] = extra["is_top1"].bool()
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-logps.sum() / count, log_probs=logps, label_mask=mask, **extra)

    model.forward = types.MethodType(forward, model)
    model._oneml_chunked_head = True


def has_chunked_head(model: Any) -> bool:
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(model, "_oneml_chunked_head", False))
