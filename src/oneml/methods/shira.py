"""SHiRA: sparse high-rank adapters (Bhardwaj et al. 2024, https://arxiv.org/abs/2406.13175).

A fixed sparse mask picks which entries of W train; the update is those entries only:

    W = W0 + M * S,   M in {0, 1}^(d_out x d_in) with r (d_in + d_out) ones (random, seeded), S zero at init

as many parameters as a rank-r LoRA, but the update is sparse and of high rank (no kappa). Only the masked entries
change, so merging is exact and switching adapters is cheap. Trains on a 4-bit base (the base layer runs as is).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class SHiRAConfig(LayerTuner):
    name: Literal["shira"] = "shira"
    complexity: ClassVar[tuple[float, str]] = (3.8, "a fixed sparse mask of trained entries: r and the mask's seed")
    peft_type: ClassVar[str] = "SHIRA"
    renamed: ClassVar[dict[str, str]] = {"mask_seed": "random_seed"}
    r: PositiveInt = 32
    """Sparsity as LoRA's rank: r (d_in + d_out) trained entries per layer (must be fewer than the layer's)."""
    mask_seed: int | None = None
    """Seed of the random mask; unset = drawn from the run's seed (train.seed)."""


METHODS.register("shira", SHiRAConfig, "SHiRA: a sparse, high-rank update on a fixed random mask")
