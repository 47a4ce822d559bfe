"""Chunked LM head + log-softmax: per-token log-probabilities without the (tokens x vocab) logits.

For hidden states h (N, H), the head W (V, H) and targets y (N,):

    log p(y_i | h_i) = z_i[y_i] - logsumexp_v z_i[v],     z_i = W h_i (+ b)

computed over tiles of (up to 1024 tokens on CPU, 4096 on CUDA) x (a slice of the vocabulary), combining the
tiles' log-sum-exps, so that at most two tiles of logits exist at a time; only the log-sum-exp of each
token is kept for the backward, which recomputes each tile and turns it, in place, into the gradient of
sum_i g_i log p_i with respect to z_i:

    dL/dz_i = g_i * (onehot(y_i) - softmax(z_i)),   dL/dh_i = dL/dz_i W,   dL/dW = sum_i dL/dz_i^T h_i

The matmuls take the model's dtype (bf16 on a GPU: tensor cores, fp32 accumulation) and the softmax runs in fp32,
as the model's own head + loss do; the tile loop never waits on the GPU (no boolean indexing, no host reads).

Per-token log-probs (not only a mean) are what SFT (token mean), DPO (per-sequence sums) and ORPO
(per-sequence means + chosen NLL) all need, so one function serves the three objectives.

Why our own rather than TRL's fused head (``trl.trainer.utils.add_fused_lm_head``): on devices
without Triton TRL scores every position (prompt and padding too) through 4096 x 32768 tiles with
several full-tile temporaries, which made a CPU step of a tiny model with a 49k vocabulary several
times slower than the plain logits (BENCHMARKS.md: 6.5x the tokens/s with ours). Here only labelled
positions are scored, in 16 MiB tiles (256 MiB on CUDA), and the head streams through the matmul once per
chunk of tokens. The model keeps TRL's calling convention (``model(..., labels=..., fused_lm_head=True)`` returns TRL's
``FusedCausalLMOutput``), so TRL's trainers and our evaluators run unchanged on top of it.
"""

from __future__ import annotations

import functools
import math
import types
from typing import Any

import torch

TILES = {"cpu": (1024, 16 * 2**20), "cuda": (4096, 256 * 2**20)}
"""(tokens per chunk, bytes of fp32 logits per tile) by device type. Every chunk streams the whole head W through
the matmul, so fewer, taller chunks keep it compute-bound (55-row chunks ran 2.5x slower than 512-row ones on CPU);
the vocabulary is folded tile by tile, so memory stays at about two tiles whatever the vocabulary. On CUDA each tile
costs a handful of kernel launches whatever its size, so tiles are 16x larger there (a 4096 x 16384 tile: ten per
chunk at Qwen2.5's 151,936 columns) and the matmuls are large enough to fill the GPU."""
ROWS, TILE_BYTES = TILES["cpu"]

STATS = ("entropy", "is_top1", "mean_logits")
"""No-gradient per-token statistics the head can also return (for the trainers' logs)."""


def _tiles(rows: int, vocab: int, chunk_rows: int | None, chunk_cols: int | None, device: torch.device):
    default_rows, tile_bytes = TILES.get(device.type, TILES["cpu"])
    step = chunk_rows or min(default_rows, max(rows, 1))
    return step, min(vocab, chunk_cols or max(256, tile_bytes // (4 * step)))


def _gemm_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The matmul operand dtype: autocast's where it is on (as ``hidden @ W.t()`` would run), else the weight's."""
    kind = hidden.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return weight.dtype


@functools.cache
def _cuda_mm_out_dtype() -> bool:
    """Whether this torch multiplies bf16/fp16 matrices straight into fp32 (``torch.mm(out_dtype=)``, CUDA only)."""
    try:
        a = torch.ones(3, 2, device="cuda", dtype=torch.bfloat16)
        # a transposed (strided) operand too, as the backward's e.t() @ h passes one
        return torch.mm(a.t(), a, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError):
        return False


def _mm32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b as fp32. fp32 operands stay fp32 (CPU; TF32 on CUDA only where train.tf32 allows it); bf16/fp16
    operands run the tensor-core matmul, which accumulates in fp32, and the result comes out in fp32 directly where
    torch can (otherwise rounded to the operand dtype first, exactly as the model's own head rounds its logits)."""
    if a.dtype == torch.float32:
        return a @ b
    if a.is_cuda and _cuda_mm_out_dtype():
        return torch.mm(a, b, out_dtype=torch.float32)
    return (a @ b).float()


def _accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0) -> None:
    """acc += alpha a @ b, with acc in fp32: in place for fp32 operands (no temporary), else through `_mm32`."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b, alpha=alpha)
    else:
        acc.add_(_mm32(a, b), alpha=alpha)


def _logits(hidden, weight, bias, v0: int, v1: int) -> torch.Tensor:
    """fp32 logits (c, v1 - v0) of one tile; ``hidden`` is already in the matmul dtype."""
    z = _mm32(hidden, weight[v0:v1].to(hidden.dtype).t())
    return z if bias is None else z.add_(bias[v0:v1])


def _fold(hidden, weight, bias, targets, cols: int, stats: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """One chunk of tokens over every vocabulary tile. Each tile gives its own log-sum-exp L_t and, for the
    entropy, E_t = sum softmax_t(z) z; the tiles combine exactly: lse = logsumexp_t L_t and
    E = sum_t exp(L_t - lse) E_t, so the entropy is lse - E. No sync with the host: every step is a tensor op."""
    c, vocab = hidden.shape[0], weight.shape[0]
    target = hidden.new_zeros(c, dtype=torch.float32)
    zsum = hidden.new_zeros(c, dtype=torch.float32)
    best_val = hidden.new_full((c,), -torch.inf, dtype=torch.float32)
    best = torch.zeros(c, dtype=torch.long, device=hidden.device)
    # Per-tile results go into buffers made once per chunk: small tensors kept alive between the tiles' large
    # ones fragment the CPU heap (measured at 8192 tokens: 370-490 MiB of peak RSS against 80 without them).
    tiles = hidden.new_empty((math.ceil(vocab / cols), c), dtype=torch.float32)  # L_t
    means = torch.empty_like(tiles) if "entropy" in stats else None  # E_t
    for k, v0 in enumerate(range(0, vocab, cols)):
        v1 = min(v0 + cols, vocab)
        z = _logits(hidden, weight, bias, v0, v1)  # (c, v)
        inside = (targets >= v0) & (targets < v1)
        target = torch.where(inside, z.gather(1, (targets - v0).clamp(0, v1 - v0 - 1)[:, None])[:, 0], target)
        if "mean_logits" in stats:
            zsum += z.sum(-1)
        tile_max, tile_arg = z.max(-1)
        if "is_top1" in stats:
            better = tile_max > best_val  # strictly: the first maximum wins, as argmax
            best = torch.where(better, tile_arg + v0, best)
            best_val = torch.maximum(best_val, tile_max)
        e = torch.sub(z, tile_max[:, None]).exp_()  # (c, v), in (0, 1]
        total = e.sum(-1)
        torch.log(total, out=tiles[k]).add_(tile_max)
        if means is not None:
            torch.linalg.vecdot(e, z, out=means[k]).div_(total)
        del z, e
    lse = torch.logsumexp(tiles, 0)
    out = {"lse": lse, "logps": target - lse}
    if "entropy" in stats:
        out["entropy"] = lse - (tiles - lse).exp_().mul_(means).sum(0)
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
        step, cols = _tiles(n, weight.shape[0], *tiles, hidden.device)
        gemm = _gemm_dtype(hidden, weight)
        parts = [
            _fold(hidden[s : s + step].to(gemm), weight, bias, targets[s : s + step], cols, stats)
            for s in range(0, n, step)
        ]
        joined = {
            k: torch.cat([p[k] for p in parts]) if parts else hidden.new_zeros(0) for k in ("lse", "logps", *stats)
        }
        ctx.save_for_backward(hidden, weight, bias, targets, joined["lse"])
        ctx.tiles, ctx.gemm = (step, cols), gemm
        extra = [joined[name] for name in stats]
        ctx.mark_non_differentiable(*extra)
        return (joined["logps"], *extra)

    @staticmethod
    def backward(ctx, grad_logps, *_):
        """dL/dz = g (onehot(y) - p) = g onehot(y) - sign(g) e with e = exp(z - lse + log|g|) >= 0: each tile is
        turned in place into e (two passes, cast to the matmul dtype on the way), and the one-hot part, one row
        of W per token, is added once per chunk, so a tile never needs a scatter (nor a host sync) nor a sign."""
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden, dtype=torch.float32) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        (step, cols), n = ctx.tiles, hidden.shape[0]
        for s in range(0, n if grad_logps is not None else 0, step):
            g = grad_logps[s : s + step].float()  # (c,)
            h, t, sign = hidden[s : s + step].to(ctx.gemm), targets[s : s + step], g.sign()
            shift = (lse[s : s + step] - g.abs().log())[:, None]  # +inf where g = 0: e = 0 there
            signed_h = h * sign[:, None].to(h.dtype) if need_w else None
            acc = torch.zeros(h.shape, dtype=torch.float32, device=h.device) if need_h else None
            for v0 in range(0, weight.shape[0], cols):
                v1 = min(v0 + cols, weight.shape[0])
                z = _logits(h, weight, bias, v0, v1).sub_(shift)
                e = z.exp_() if ctx.gemm == torch.float32 else torch.exp(z, out=torch.empty_like(z, dtype=ctx.gemm))
                w = weight[v0:v1].to(ctx.gemm)
                if need_h:
                    _accumulate(acc, e, w)
                if need_w:
                    _accumulate(grad_w[v0:v1], e.t(), signed_h, alpha=-1)
                if need_b:
                    grad_b[v0:v1].addmv_(e.t().float(), sign, alpha=-1)
                del z, e
            if need_h:  # g W[y] - sign(g) (e W)
                grad_h[s : s + step] = weight[t].float().mul_(g[:, None]).sub_(acc.mul_(sign[:, None]))
            if need_w:
                grad_w.index_add_(0, t, h.float() * g[:, None])
            if need_b:
                grad_b.index_add_(0, t, g)
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


@torch.compiler.disable  # the labelled-token count changes every batch: traced, each count would be a recompile
def _through_head(head: Any, hidden: torch.Tensor, targets: torch.Tensor, stats: tuple[str, ...], log_probs=None):
    """``log_probs`` (default: `chunked_log_probs`) with the head's weight, run as the head module's own forward.

    The head's module hooks then fire as for ``head(hidden)``: FSDP2 gathers its sharded weight before and
    reduce-scatters its gradient after (``head.weight`` read outside its forward is a shard, or memory FSDP frees
    before backward).
    """

    def forward(h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, t = h.to(head.weight.device), t.to(head.weight.device)
        if log_probs is None:
            return chunked_log_probs(h, head.weight, t, head.bias, stats=stats)
        return tuple(log_probs(h, head.weight, t, head.bias, stats))

    own = head.__dict__.get("forward")
    head.forward = forward
    try:
        return head(hidden, targets)
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own


def install_chunked_head(model: Any, stats: tuple[str, ...] = ("entropy", "is_top1"), log_probs=None) -> None:
    """Serve ``model(..., labels=..., fused_lm_head=True)`` with `ChunkedLogProb`.

    ``model``: a transformers causal LM, or a peft model (the head goes on the model under it, where TRL
    puts its own). Install after the TRL trainer is built (its constructor adds its fused head, which
    this one replaces); calls without ``fused_lm_head`` (generation, plain logits) go to the previous forward.
    ``log_probs``: another head for forwards that build gradients (`oneml.models.head_backends`: liger, cce), same
    signature as `chunked_log_probs`; evaluation forwards keep ours, which computes every statistic exactly.
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
        training = log_probs if torch.is_grad_enabled() else None
        picked = _through_head(head, hidden[mask], labels.to(hidden.device)[mask], stats, training)
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
