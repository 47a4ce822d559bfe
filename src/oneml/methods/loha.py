"""LoHa: low-rank Hadamard product (Hyeon-Woo et al. 2022, FedPara, https://arxiv.org/abs/2108.06098; as in
LyCORIS, https://arxiv.org/abs/2309.14859).

The update is the elementwise product of two rank-r products, so its rank can reach r^2 for 2 r (d_in + d_out)
parameters:

    W = W0 + s (B1 A1) * (B2 A2),   A_i: (r x d_in), B_i: (d_out x r),  s = alpha / r

Not low-rank, so no kappa. peft builds the update from the base weight's shape in the layer's own matmul, which a
4-bit layer does not expose: refused on a quantized base. Mergeable.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class LoHaConfig(LayerTuner):
    name: Literal["loha"] = "loha"
    complexity: ClassVar[tuple[float, str]] = (3.4, "two LoRA pairs multiplied elementwise: r, alpha, two dropouts")
    peft_type: ClassVar[str] = "LOHA"
    quantize_refusal: ClassVar[str | None] = "computes on the base weight itself, which a 4-bit layer does not hold"
    r: PositiveInt = 8
    """Rank of each of the two factor pairs."""
    alpha: float = Field(default=8.0, gt=0)
    """Scale numerator: the update is multiplied by alpha / r."""
    rank_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout over the update's rank dimension."""
    module_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Probability of skipping the whole adapter of a layer at a step."""


METHODS.register("loha", LoHaConfig, "LoHa: Hadamard product of two low-rank updates (rank up to r^2)")
