"""Padding-free packing of SFT batches: no pad tokens, no attention across examples.

A batch of examples [a1 a2 a3], [b1 b2] becomes one row [a1 a2 a3 b1 b2] with position ids
[0 1 2 0 1] and no attention mask (TRL's ``DataCollatorForLanguageModeling(padding_free=True)``).
transformers 5 derives a block-diagonal causal mask from position ids that restart at 0 when the
attention mask is None and no KV cache is built (``masking_utils.find_packed_sequence_indices``;
TRL passes ``use_cache=False``; flash attention uses the cumulative lengths instead), so each
example attends only to itself, exactly as when padded. The
first label of every example is dropped (it would be predicted from the previous example), which
it never is unpacked either since the shifted loss has nothing to predict it from. The loss is the
sum over real label tokens divided by their count, so it equals the unpacked loss.

What it saves is the compute on padding: on alpaca-demo lengths a padded batch of 4 is roughly half
pad. When it would be wrong it is switched off with a recorded reason (`packing_problem`):
prompt-learning methods (prefix tuning prepends virtual tokens and its own attention mask), and any
model whose output on a packed pair differs from its output on each example alone (a probe of two
short random sequences, which catches attention implementations that ignore position ids).
"""

from __future__ import annotations

from typing import Any

import torch

PROBE_LENGTHS = (5, 3)
PROBE_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-3}
"""Largest relative difference (to the largest hidden-state magnitude) still read as "the same"."""


def packing_problem(model: Any) -> str | None:
    """Why padding-free batches would change this model's results, or None when they are exact."""
    configs = getattr(model, "peft_config", None) or {}
    for cfg in configs.values():
        if getattr(cfg, "is_prompt_learning", False):
            return f"{cfg.peft_type.value.lower()} prepends virtual tokens with its own attention mask"
    try:
        gap = _probe_gap(model)
    except Exception as err:  # an architecture that rejects position ids without a mask
        return f"the model does not accept packed inputs ({type(err).__name__})"
    tol = PROBE_TOLERANCE.get(next(model.parameters()).dtype, 1e-3)
    if gap > tol:
        return f"the model's attention mixes packed examples (probe differs by {gap:.2g})"
    return None


@torch.no_grad()
def _probe_gap(model: Any) -> float:
    """Largest difference of the hidden states of two random sequences run packed vs one by one, relative to
    their largest magnitude."""
    device = next(model.parameters()).device
    vocab = model.config.get_text_config().vocab_size
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, vocab, (n,), generator=gen).to(device) for n in PROBE_LENGTHS]
    backbone = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = backbone.base_model
    was_training = backbone.training
    backbone.eval()
    try:
        alone = [backbone(input_ids=s[None], use_cache=False).last_hidden_state[0] for s in seqs]
        positions = torch.cat([torch.arange(len(s), device=device) for s in seqs])[None]
        packed = backbone(input_ids=torch.cat(seqs)[None], position_ids=positions, use_cache=False).last_hidden_state
    finally:
        backbone.train(was_training)
    alone = torch.cat(alone).float()
    return float((packed[0].float() - alone).abs().max() / alone.abs().max().clamp(min=1e-6))
