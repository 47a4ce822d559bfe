"""RandLoRA: full-rank parameter-efficient fine-tuning from random bases (Albert et al. 2025,
https://arxiv.org/abs/2502.00987).

A learned combination of n frozen random rank-r bases, shared by the layers of a shape; only diagonal scalings
train, so the update can reach full rank at VeRA-like cost:

    W = W0 + s sum_{i=1..n} B_i Lambda_i A_i Gamma_i,   B_i, A_i frozen random (r-wide), Lambda_i (r), Gamma_i
    (min(d_in, d_out)) trained,  n = min(d_in, d_out) / r,  s = alpha / r

A larger r means fewer bases and fewer parameters (the paper's inverse of LoRA's r). Full rank by design: no kappa.
The bases are saved with the adapter. Trains on a 4-bit base. Mergeable.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class RandLoRAConfig(LayerTuner):
    name: Literal["randlora"] = "randlora"
    complexity: ClassVar[tuple[float, str]] = (3.6, "shared random bases with trained scalings: r, alpha, sparsity")
    peft_type: ClassVar[str] = "RANDLORA"
    renamed: ClassVar[dict[str, str]] = {
        "alpha": "randlora_alpha",
        "dropout": "randlora_dropout",
        "projection_seed": "projection_prng_key",
    }
    pinned: ClassVar[dict[str, Any]] = {"save_projection": True}
    r: PositiveInt = 32
    """Width of each random basis (more width = fewer bases = fewer trained parameters)."""
    alpha: float = Field(default=640.0, gt=0)
    """Scale numerator: the update is multiplied by alpha / r (peft's default is 20 r)."""
    sparse: bool = False
    """Sparse ternary random bases (the paper's sparse variant)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the adapter's input."""
    projection_seed: int = 0
    """Seed of the frozen random bases."""


METHODS.register("randlora", RandLoRAConfig, "RandLoRA: full-rank update from frozen random bases")
