"""A CPU stand-in for flash attention's semantics, registered with transformers under ``NAME``.

Flash kernels take no dense mask: a padded batch is unpadded through its 2-D attention mask, a batch flattened
into one sequence is split by cumulative lengths (``cu_seq_lens_q``), and anything else is one causal sequence
per row, whatever its position ids. This function does exactly that with plain matmuls, so the packed layout can
be checked against flash semantics without a GPU (tests/gpu runs the real kernels where they exist).
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

NAME = "oneml_varlen_reference"
"""No 'flash' in it: transformers would try to import a flash kernel for such a name."""


def _causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """One causal sequence: q, k, v (H, T, D) -> (T, H, D)."""
    scores = (q @ k.transpose(-1, -2)) * scale  # (H, T, T)
    future = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device).triu(1)
    weights = scores.masked_fill(future, float("-inf")).softmax(-1)
    return (weights @ v).transpose(0, 1)


def varlen_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """query (B, H, T, D), key/value (B, H_kv, T, D) -> ((B, T, H, D), None), as transformers' attention functions."""
    batch, heads, length, dim = query.shape
    key = key.repeat_interleave(heads // key.shape[1], 1)
    value = value.repeat_interleave(heads // value.shape[1], 1)
    scale = scaling if scaling is not None else dim**-0.5
    out = torch.zeros(batch, length, heads, dim, dtype=query.dtype, device=query.device)
    cu = kwargs.get("cu_seq_lens_q")
    if cu is not None:  # flattened: (H, B*T, D), split at the cumulative lengths
        q, k, v = (t.transpose(0, 1).reshape(heads, batch * length, dim) for t in (query, key, value))
        flat = out.view(batch * length, heads, dim)
        for start, end in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
            flat[start:end] = _causal(q[:, start:end], k[:, start:end], v[:, start:end], scale)
        return out, None
    for row in range(batch):
        keep = (
            attention_mask[row].bool()
            if attention_mask is not None
            else torch.ones(length, dtype=torch.bool, device=query.device)
        )
        q, k, v = (t[row][:, keep] for t in (query, key, value))
        out[row, keep] = _causal(q, k, v, scale)
    return out, None


AttentionInterface.register(NAME, varlen_attention)
AttentionMaskInterface.register(NAME, flash_attention_mask)
