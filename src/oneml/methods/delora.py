"""DeLoRA: decoupled low-rank adaptation (Bini et al. 2025, https://arxiv.org/abs/2503.18225).

LoRA with each rank-one term normalised and the whole update's size bounded by a learned lambda, so the strength
of the change (angle) is decoupled from its direction:

    W = W0 + (lambda ||W0|| / r) B Xi A,   Xi = diag(1 / (||b_i|| ||a_i||)),   ||W0|| per input column

(peft starts A, B so that dW = 0). The update has rank <= r: kappa(B' A') with B' = B Xi lambda / r,
A' = A ||W0||. peft reads the base weight's column norms, which a 4-bit layer packs: refused on a quantized base.
Mergeable.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class DeLoRAConfig(LayerTuner):
    name: Literal["delora"] = "delora"
    complexity: ClassVar[tuple[float, str]] = (3.3, "LoRA with normalised factors and a learned bound: r, lambda")
    peft_type: ClassVar[str] = "DELORA"
    renamed: ClassVar[dict[str, str]] = {"dropout": "module_dropout"}
    quantize_refusal: ClassVar[str | None] = "computes on the base weight itself, which a 4-bit layer does not hold"
    fsdp_refusal: ClassVar[str | None] = (
        "peft keeps each layer's weight norms as a buffer, left unsharded beside the sharded factors"
    )
    r: PositiveInt = 8
    """Rank of the update."""
    delora_lambda: float = Field(default=15.0, gt=0)
    """Initial bound lambda on the update's norm (relative to ||W0||); it trains."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Probability of skipping the whole adapter of a layer at a step."""

    def factors(self, layer: Any, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        A, B = layer.delora_A[adapter], layer.delora_B[adapter]
        norms = torch.clamp(A.norm(dim=1), min=1e-4) * torch.clamp(B.norm(dim=0), min=1e-4)  # as peft's delta
        scale = layer.delora_lambda[adapter] / layer.r[adapter] / norms
        return A * layer.delora_w_norm[adapter].unsqueeze(0), B * scale


METHODS.register("delora", DeLoRAConfig, "DeLoRA: LoRA with normalised factors and a learned norm bound")
