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
    nll = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.float64)
    count = 0
    start = time.perf_counter()
    for batch in trainer.get_eval_dataloader():
        batch = trainer._prepare_inputs(batch)
        out = model(**batch, fused_lm_head=True)  # log_probs, is_top1, label_mask: (B, T-1)
        nll -= out.log_probs.double().sum().cpu()
        correct += out.is_top1.double().sum().cpu()
        count += int(out.label_mask.sum())
    seconds = time.perf_counter() - start
    if was_training:
        model.train()
    loss = float(nll / max(count, 1))
    return {
        f"{prefix}_loss": loss,
        f"{prefix}_perplexity": math.exp(min(loss, 50.0)),
        f"{prefix}_token_accuracy": float(correct / max(count, 1)),
        f"{prefix}_tokens": float(count),
        f"{prefix}_seconds": seconds,
    }
