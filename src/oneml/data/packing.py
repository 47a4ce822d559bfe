"""Padding-free packing of SFT batches: no pad tokens in the compute, no attention across examples.

Each batch's examples are bin-packed (first fit, longest first) into rows as long as its longest example:

    [a1 a2 a3 a4 a5]          [a1 a2 a3 a4 a5]      position ids [0 1 2 3 4]
    [b1 b2 pad pad pad]  ->   [b1 b2 c1 c2 c3]                   [0 1 0 1 2]
    [c1 c2 c3 pad pad]

and passed with restarting position ids and no attention mask. transformers 5 derives a block-diagonal causal
mask from position ids that restart at 0 when the attention mask is None and no KV cache is built
(``masking_utils.find_packed_sequence_indices``, row by row; TRL passes ``use_cache=False``), so each example attends
only to itself, exactly as when padded. Flash-attention kernels take no mask: they see sequence boundaries only as
cumulative lengths, which transformers derives from position ids at batch size 1 alone; at batch > 1 each row would
be one causal sequence and its examples would attend to each other. For those kernels (`takes_varlen`) the collator
also emits the cumulative lengths over the flattened batch (``cu_seq_lens_q/k``, ``max_length_q/k``, computed on
the host), which transformers passes to the varlen kernel as they are:

    rows [a1 a2 a3 a4 a5] [b1 b2 c1 c2 c3]  ->  cu_seq_lens [0 5 7 10]   (a row's pad tail is a sequence too)

The first label of
every packed example is dropped (it would be predicted from the previous example), as the shifted loss never
predicts it unpacked either; a row's leftover tail is a pad segment of its own with no labels.

The batch holds the same examples as unpacked, and TRL divides the summed token loss by the number of label
tokens, so loss and gradients equal the padded batch's (tests/perf/test_packing.py). Rows are bounded by the
longest example rather than the whole batch concatenated into one row (TRL's ``padding_free``): with sdpa or
eager attention the mask is dense, so one row of B x L tokens costs (B L)^2 attention scores, which made packed
CPU steps 2-5x slower than padded ones (measured); here a row never costs more than a padded one.

When it would be wrong it is switched off with a recorded reason (`packing_problem`): prompt-learning methods
(prefix tuning prepends virtual tokens and its own attention mask), and any model whose output on a packed pair
differs from its output on each example alone (a probe of two short random sequences, which catches attention
implementations that ignore position ids). The probe runs the collator's own layout at batch > 1 (several rows,
two examples in a row, a pad tail), so it checks exactly what training feeds the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

PROBE_LENGTHS = (5, 4, 3, 2)
"""Packed as rows [5], [4 + a 1-token tail], [3 | 2]: batch > 1, two examples in a row, a pad tail."""
VARLEN_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
"""transformers' flash-attention kwargs for sequences flattened into one (its ``FlashAttentionKwargs``)."""
PROBE_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-3}
"""Largest relative difference (to the largest hidden-state magnitude) still read as "the same"."""


def packing_problem(model: Any) -> str | None:
    """Why padding-free batches would change this model's results, or None when they are exact."""
    configs = getattr(model, "peft_config", None) or {}
    for cfg in configs.values():
        if getattr(cfg, "is_prompt_learning", False):
            return f"{cfg.peft_type.value.lower()} prepends virtual tokens with its own attention mask"
    try:
        gap = _probe_gap(model, varlen=takes_varlen(model))
    except Exception as err:  # an architecture that rejects position ids without a mask
        return f"the model does not accept packed inputs ({type(err).__name__})"
    tol = PROBE_TOLERANCE.get(next(model.parameters()).dtype, 1e-3)
    if gap > tol:
        return f"the model's attention mixes packed examples (probe differs by {gap:.2g})"
    return None


def takes_varlen(model: Any) -> bool:
    """True for attention kernels that read sequence boundaries only from cumulative lengths: flash-attention
    (transformers' flash_attention_2/3, paged and hub flash kernels), which ignores position ids at batch > 1."""
    return "flash" in (getattr(model.config, "_attn_implementation", None) or "")


@torch.no_grad()
def _probe_gap(model: Any, varlen: bool) -> float:
    """Largest difference of the hidden states of random sequences run as one packed batch (the collator's layout)
    vs one by one, relative to their largest magnitude."""
    device = next(model.parameters()).device
    vocab = model.config.get_text_config().vocab_size
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, vocab, (n,), generator=gen) for n in PROBE_LENGTHS]
    batch = PackedCollator(pad_token_id=0, varlen=varlen)([{"input_ids": s, "labels": s} for s in seqs])
    batch = {k: v for k, v in batch.items() if k not in ("labels", REAL_TOKENS)}
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    backbone = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = backbone.base_model
    was_training = backbone.training
    backbone.eval()
    try:
        alone = [backbone(input_ids=s[None].to(device), use_cache=False).last_hidden_state[0] for s in seqs]
        packed = backbone(**inputs, use_cache=False).last_hidden_state  # (rows, width, H)
    finally:
        backbone.train(was_training)
    at = [packed[r, start : start + len(seqs[i])] for r, row in enumerate(layout(PROBE_LENGTHS)) for i, start in row]
    order = [i for row in layout(PROBE_LENGTHS) for i, _ in row]
    alone = torch.cat([alone[i] for i in order]).float()
    return float((torch.cat(at).float() - alone).abs().max() / alone.abs().max().clamp(min=1e-6))


def layout(lengths: list[int] | tuple[int, ...]) -> list[list[tuple[int, int]]]:
    """Per packed row, (example index, start offset) of each example, as `PackedCollator` places them."""
    rows = []
    for row in pack(list(lengths), max(lengths)):
        starts = [sum(lengths[j] for j in row[:k]) for k in range(len(row))]
        rows.append(list(zip(row, starts, strict=True)))
    return rows


def varlen_kwargs(lengths: list[int] | tuple[int, ...], width: int) -> dict[str, Any]:
    """Flash varlen kwargs of the packed batch, flattened row after row: each example is a sequence, and so is each
    row's pad tail (so that no real token attends to it)."""
    segments: list[int] = []
    for row in layout(lengths):
        used = [lengths[i] for i, _ in row]
        segments += used + ([width - sum(used)] if sum(used) < width else [])
    cu = torch.tensor([0, *segments], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    longest = max(segments)
    return dict(zip(VARLEN_KEYS, (cu, cu, longest, longest), strict=True))


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``capacity`` tokens: first fit, longest first."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([]), room.append(capacity)
            slot = len(rows) - 1
        rows[slot].append(i)
        room[slot] -= lengths[i]
    return rows


REAL_TOKENS = "oneml_real_tokens"
"""Batch key: the packed examples' token count (a row's tail is pad), taken out before the model sees the batch."""


@dataclass
class PackedCollator:
    """Batches of {input_ids, labels} examples -> packed rows of input_ids, labels and restarting position_ids (and,
    with ``varlen``, the flash kernels' cumulative lengths: `varlen_kwargs`)."""

    pad_token_id: int
    varlen: bool = False

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        lengths = [len(e["input_ids"]) for e in examples]
        rows = layout(lengths)
        width = max(sum(lengths[i] for i, _ in row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        positions = torch.zeros_like(ids)
        for r, row in enumerate(rows):
            for i, at in row:
                n = lengths[i]
                ids[r, at : at + n] = torch.as_tensor(examples[i]["input_ids"])
                labels[r, at + 1 : at + n] = torch.as_tensor(examples[i]["labels"][1:])
                positions[r, at : at + n] = torch.arange(n)
            end = sum(lengths[i] for i, _ in row)
            positions[r, end:] = torch.arange(width - end)  # the tail: a segment of its own, no labels
        batch = {"input_ids": ids, "labels": labels, "position_ids": positions, REAL_TOKENS: sum(lengths)}
        return batch | (varlen_kwargs(lengths, width) if self.varlen else {})
