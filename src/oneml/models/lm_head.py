"""Chunked LM head + log-softmax: per-token log-probabilities without the (tokens x vocab) logits.

For hidden states h (N, H), the head W (V, H) and targets y (N,):

    log p(y_i | h_i) = z_i[y_i] - logsumexp_v z_i[v],     z_i = W h_i (+ b)

computed over tiles of (up to 1024 tokens) x (a slice of the vocabulary), folding the slices with an
online log-sum-exp, so that at most two tiles of logits exist at a time; only the log-sum-exp of each
token is kept for the backward, which recomputes each tile and turns it, in place, into the gradient of
sum_i g_i log p_i with respect to z_i:

    dL/dz_i = g_i * (onehot(y_i) - softmax(z_i)),   dL/dh_i = dL/dz_i W,   dL/dW = sum_i dL/dz_i^T h_i

Per-token log-probs (not only a mean) are what SFT (token mean), DPO (per-sequence sums) and ORPO
(per-sequence means + chosen NLL) all need, so one function serves the three objectives.

Why our own rather than TRL's fused head (``trl.trainer.utils.add_fused_lm_head``): on devices
without Triton TRL scores every position (prompt and padding too) through 4096 x 32768 tiles with
several full-tile temporaries, which made a CPU step of a tiny model with a 49k vocabulary several
times slower than the plain logits (BENCHMARKS.md: 6.5x the tokens/s with ours). Here only labelled
positions are scored, in 16 MiB tiles, and the head streams through the matmul once per 1024 tokens. The
model keeps TRL's calling convention (``model(..., labels=..., fused_lm_head=True)`` returns TRL's
``FusedCausalLMOutput``), so TRL's trainers and our evaluators run unchanged on top of it.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import torch

ROWS = 1024
"""Tokens per chunk. Every chunk streams the whole head W (V x H: 545 MB for Qwen2.5-0.5B in fp32) through the
matmul, so fewer, taller chunks keep it compute-bound; 55-row chunks ran 2.5x slower than 512-row ones on CPU."""

TILE_BYTES = 16 * 2**20
"""fp32 logits per (rows x vocabulary columns) tile: the vocabulary is folded tile by tile with an online
log-sum-exp, so memory stays at two tiles whatever the vocabulary (TRL's CPU tiles are 512 MiB)."""

STATS = ("entropy", "is_top1", "mean_logits")
"""No-gradient per-token statistics the head can also return (for the trainers' logs)."""


def _tiles(rows: int, vocab: int, chunk_rows: int | None, chunk_cols: int | None) -> tuple[int, int]:
    step = chunk_rows or min(ROWS, max(rows, 1))
    return step, min(vocab, chunk_cols or max(256, TILE_BYTES // (4 * step)))


def _logits(hidden, weight, bias, v0: int, v1: int) -> torch.Tensor:
    w = weight[v0:v1]
    z = hidden @ w.t() if bias is None else torch.addmm(bias[v0:v1], hidden, w.t())  # (c, v1 - v0)
    return z.float()  # a no-op in fp32; with bf16 weights the softmax runs in fp32


def _fold(hidden, weight, bias, targets, cols: int, stats: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """One chunk of tokens over every vocabulary tile: online max m, S = sum e^(z-m), T = sum e^(z-m)(z-m)."""
    c, vocab = hidden.shape[0], weight.shape[0]
    m = hidden.new_full((c,), -torch.inf, dtype=torch.float32)
    total, tz, zsum = (hidden.new_zeros(c, dtype=torch.float32) for _ in range(3))
    target = hidden.new_zeros(c, dtype=torch.float32)
    best = torch.zeros(c, dtype=torch.long, device=hidden.device)
    for v0 in range(0, vocab, cols):
        v1 = min(v0 + cols, vocab)
        z = _logits(hidden, weight, bias, v0, v1)  # (c, v)
        inside = (targets >= v0) & (targets < v1)
        target = torch.where(inside, z.gather(1, (targets - v0).clamp(0, v1 - v0 - 1)[:, None])[:, 0], target)
        if "mean_logits" in stats:
            zsum += z.sum(-1)
        tile_max, tile_arg = z.max(-1)
        best = torch.where(tile_max > m, tile_arg + v0, best)  # the first maximum wins, as argmax
        new_m = torch.maximum(m, tile_max)
        scale = torch.exp(m - new_m)
        e = z.sub_(new_m[:, None]).exp()  # z now holds z - new_m
        if "entropy" in stats:  # T relative to the new max: T' = scale (T + (m - new_m) S) + sum e (z - new_m)
            old = torch.where(total > 0, scale * (tz + (m - new_m) * total), 0.0)  # nothing yet on the first tile
            tz = old + e.mul(z).sum(-1)
        total = total * scale + e.sum(-1)
        m = new_m
    lse = m + total.log()
    out = {"lse": lse, "logps": target - lse}
    if "entropy" in stats:  # H = lse - sum p z = lse - (m + T / S)
        out["entropy"] = lse - m - tz / total
    if "is_top1" in stats:
        out["is_top1"] = (best == targets).float()
    if "mean_logits" in stats:
        out["mean_logits"] = zsum / vocab
    return out


class ChunkedLogProb(torch.autograd.Function):
    """log p(targets | hidden) under the head (weight, bias), tile by tile; see the module docstring."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, tiles, stats):  # hidden (N, H), targets (N,)
        n = hidden.shape[0]
        step, cols = _tiles(n, weight.shape[0], *tiles)
        parts = [
            _fold(hidden[s : s + step], weight, bias, targets[s : s + step], cols, stats) for s in range(0, n, step)
        ]
        joined = {
            k: torch.cat([p[k] for p in parts]) if parts else hidden.new_zeros(0) for k in ("lse", "logps", *stats)
        }
        ctx.save_for_backward(hidden, weight, bias, targets, joined["lse"])
        ctx.tiles = (step, cols)
        extra = [joined[name] for name in stats]
        ctx.mark_non_differentiable(*extra)
        return (joined["logps"], *extra)

    @staticmethod
    def backward(ctx, grad_logps, *_):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden, dtype=torch.float32) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        (step, cols), n, vocab = ctx.tiles, hidden.shape[0], weight.shape[0]
        for s in range(0, n if grad_logps is not None else 0, step):
            h, t, g = hidden[s : s + step], targets[s : s + step], grad_logps[s : s + step].float()  # (c, H), (c,)
            rows = torch.arange(h.shape[0], device=h.device)
            for v0 in range(0, vocab, cols):
                v1 = min(v0 + cols, vocab)
                dz = _logits(h, weight, bias, v0, v1).sub_(lse[s : s + step, None]).exp_().mul_(-g[:, None])  # -g p
                inside = (t >= v0) & (t < v1)
                dz[rows[inside], t[inside] - v0] += g[inside]  # + g onehot(y)
                if need_h:
                    grad_h[s : s + step] += dz @ weight[v0:v1].float()
                if need_w:
                    grad_w[v0:v1] += dz.t() @ h.float()
                if need_b:
                    grad_b[v0:v1] += dz.sum(0)
        cast = lambda x, like: None if x is None else x.to(like.dtype)  # noqa: E731
        return (
            cast(grad_h, hidden),
            cast(grad_w, weight),
            None if bias is None else cast(grad_b, bias),
            None,
            None,
            None,
        )


def chunked_log_probs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    chunk_rows: int | None = None,
    chunk_cols: int | None = None,
    stats: tuple[str, ...] = (),
) -> tuple[torch.Tensor, ...]:
    """(log-probs (N,), *stats (N,) each) for hidden (N, H), weight (V, H), targets (N,).

    ``chunk_rows`` / ``chunk_cols``: tile shape (tokens x vocabulary columns); the defaults suit a CPU or GPU.
    """
    unknown = set(stats) - set(STATS)
    if unknown:
        raise ValueError(f"stats: unknown {sorted(unknown)}; known: {STATS}")
    return ChunkedLogProb.apply(hidden, weight, bias, targets, (chunk_rows, chunk_cols), tuple(stats))


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
    head = model.get_output_embeddings()
    if head is None:
        return "the model has no output embedding"
    if hasattr(head, "base_layer"):  # a peft layer: the head's weight alone would miss the adapter's delta
        return "the method adapts the LM head itself; the trainer's own head is used"
    return None


def _through_head(head: Any, hidden: torch.Tensor, targets: torch.Tensor, stats: tuple[str, ...]):
    """`chunked_log_probs` with the head's weight, run as the head module's own forward.

    The head's module hooks then fire as for ``head(hidden)``: FSDP2 gathers its sharded weight before and
    reduce-scatters its gradient after (``head.weight`` read outside its forward is a shard, or memory FSDP frees
    before backward).
    """

    def forward(h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return chunked_log_probs(
            h.to(head.weight.device), head.weight, t.to(head.weight.device), head.bias, stats=stats
        )

    own = head.__dict__.get("forward")
    head.forward = forward
    try:
        return head(hidden, targets)
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own


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
        mask = labels.to(hidden.device) != -100  # (B, T-1)
        picked = _through_head(head, hidden[mask], labels.to(hidden.device)[mask], stats)
        # masked_scatter keeps an all-ignored micro-batch connected to the graph (a differentiable zero).
        mask = mask.to(picked[0].device)
        logps, *extra = (x.new_zeros(mask.shape).masked_scatter(mask, x) for x in picked)
        extra = dict(zip(stats, extra, strict=True))
        if "is_top1" in extra:
            extra["is_top1"] = extra["is_top1"].bool()
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-logps.sum() / count, log_probs=logps, label_mask=mask, **extra)

    model.forward = types.MethodType(forward, model)
    model._oneml_chunked_head = True
