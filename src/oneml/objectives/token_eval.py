"""Held-out metrics, weighted per token.

Transformers' `Trainer.evaluate` averages per-batch means, which weights a short batch like a long
one; perplexity must be exp of the *token* mean, so we sum log-probabilities and correct top-1
predictions over all label tokens and divide once:

    eval_loss = -(1/N) sum_t log p(y_t | x_<t),   perplexity = exp(eval_loss),
    token_accuracy = (1/N) sum_t [argmax p(. | x_<t) = y_t],   N = number of label tokens.
"""

from __future__ import annotations

import math
import time

import torch


@torch.no_grad()
def evaluate_tokens(trainer, prefix: str = "eval") -> dict[str, float]:
    """Token-weighted loss, perplexity and accuracy of ``trainer.model`` on its eval dataset.

    Uses the chunked LM head TRL installs (``fused_lm_head=True``), so the (B, T, V) logits are
    never materialised, which matters at vocabularies of 150k.
    """
    model = trainer.model
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # -sum log p, correct top-1, label tokens
    start = time.perf_counter()
    from oneml.data.packing import REAL_TOKENS

    for batch in trainer.get_eval_dataloader():
        batch.pop(REAL_TOKENS, None)  # a packed batch's token count, not a model input
        batch = trainer._prepare_inputs(batch)
        out = model(**batch, fused_lm_head=True)  # log_probs, is_top1, label_mask: (B, T-1)
        rows = torch.stack([-out.log_probs.double().sum(-1), out.is_top1.double().sum(-1)], dim=-1)
        rows = torch.cat([rows, out.label_mask.double().sum(-1, keepdim=True)], dim=-1)  # (B, 3)
        # Over several processes each holds a shard of the eval rows (the last one padded with repeats, which
        # gather_for_metrics drops), so the sums are over every row exactly once, whatever the process count.
        totals += trainer.accelerator.gather_for_metrics(rows).sum(0).cpu()
    seconds = time.perf_counter() - start
    if was_training:
        model.train()
    nll, correct, count = float(totals[0]), float(totals[1]), int(totals[2])
    loss = nll / max(count, 1)
    return {
        f"{prefix}_loss": loss,
        f"{prefix}_perplexity": math.exp(min(loss, 50.0)),
        f"{prefix}_token_accuracy": correct / max(count, 1),
        f"{prefix}_tokens": float(count),
        f"{prefix}_seconds": seconds,
    }
