"""GraLoRA: granular low-rank adaptation (Jung et al. 2025, https://arxiv.org/abs/2505.20355).

The weight is cut into k x k blocks and each block gets its own LoRA of rank r / k, for the parameters of one rank-r
LoRA (each input slice has an A_i of rank r, each output slice a B_j of rank r; block (i, j) uses slice j of A_i
and slice i of B_j):

    dW[i, j] = s A_i[:, j] B_j[i, :],   rank r / k each,   s = alpha / (r + hybrid_r)

so the update can reach rank k r where LoRA's stays at r (the paper's answer to LoRA's gradient entanglement at
large ranks). ``hybrid_r`` > 0 adds a plain LoRA of that rank beside the blocks. The whole update is not one
low-rank product, so no kappa. r must be a multiple of k, and every adapted layer's input and output widths too
(peft refuses the widths; the rank is checked here, where peft would fail in the first forward). The blocks
compute from the layer's input, so the base may be 4-bit (quantize: nf4 or fp4). Mergeable.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class GraLoRAConfig(LayerTuner):
    name: Literal["gralora"] = "gralora"
    complexity: ClassVar[tuple[float, str]] = (2.5, "LoRA cut into k x k blocks: r, alpha and k dividing r and widths")
    peft_type: ClassVar[str] = "GRALORA"
    renamed: ClassVar[dict[str, str]] = {"k": "gralora_k", "dropout": "gralora_dropout"}
    r: PositiveInt = 8
    """Rank of the whole update's parameters (as LoRA's r); each of the k x k blocks gets rank r / k."""
    alpha: float = Field(default=16.0, gt=0)
    """Scale numerator: the update is multiplied by alpha / (r + hybrid_r)."""
    k: PositiveInt = 2
    """Blocks per side: k = 1 is LoRA; must divide r and every adapted layer's input and output width."""
    hybrid_r: NonNegativeInt = 0
    """Rank of a plain LoRA added beside the blocks (0: none)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the adapter's input."""

    @model_validator(mode="after")
    def _rank_divides(self) -> GraLoRAConfig:
        if self.r % self.k:
            raise ValueError(f"r ({self.r}) must be a multiple of k ({self.k}): each block gets rank r / k")
        return self


METHODS.register("gralora", GraLoRAConfig, "GraLoRA: LoRA cut into k x k blocks of rank r / k (rank up to k r)")
