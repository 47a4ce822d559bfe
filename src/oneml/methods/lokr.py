"""LoKr: low-rank Kronecker product (LyCORIS, https://arxiv.org/abs/2309.14859; after KronA,
https://arxiv.org/abs/2212.10650).

The update is a Kronecker product of a small dense factor and a rank-r one:

    W = W0 + s C (x) (B A),   C: (u x v), B A: (d_out/u x d_in/v) of rank r,  s = alpha / r

(u, v from peft's factorisation of the layer's shape, ``decompose_factor``); rank(C (x) BA) = rank(C) rank(BA), so not
low-rank in LoRA's sense: no kappa. Refused on a quantized base (peft builds it from the base weight). Mergeable.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class LoKrConfig(LayerTuner):
    name: Literal["lokr"] = "lokr"
    complexity: ClassVar[tuple[float, str]] = (3.5, "a Kronecker product: r, alpha and a factorisation of each shape")
    peft_type: ClassVar[str] = "LOKR"
    quantize_refusal: ClassVar[str | None] = "computes on the base weight itself, which a 4-bit layer does not hold"
    r: PositiveInt = 8
    """Rank of the low-rank Kronecker factor."""
    alpha: float = Field(default=8.0, gt=0)
    """Scale numerator: the update is multiplied by alpha / r."""
    decompose_both: bool = False
    """Also write the small factor C as a low-rank product."""
    decompose_factor: int = -1
    """Kronecker factorisation of each dimension: -1 = as square as possible."""
    rank_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout over the update's rank dimension."""
    module_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Probability of skipping the whole adapter of a layer at a step."""


METHODS.register("lokr", LoKrConfig, "LoKr: Kronecker product of a small factor and a low-rank one")
