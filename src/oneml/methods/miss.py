"""MiSS (formerly Bone): matrix shard sharing (Kang 2024, https://arxiv.org/abs/2409.15371).

One small shard D (r x d_out) is shared by every group of r input features: the input is summed over its d_in / r
groups and multiplied by D, i.e. the update is D^T tiled along the input,

    W = W0 + [D^T  D^T  ...  D^T],    D: (r x d_out), zero at init

which has rank <= r (factors A' = [I_r I_r ... I_r], B' = D^T: kappa logged). r need not divide d_in (the input is
padded). Trains on a 4-bit base (the base layer runs as is). Mergeable.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class MiSSConfig(LayerTuner):
    name: Literal["miss"] = "miss"
    complexity: ClassVar[tuple[float, str]] = (3.1, "one shared shard per layer: a single size r, zero init")
    peft_type: ClassVar[str] = "MISS"
    renamed: ClassVar[dict[str, str]] = {"dropout": "miss_dropout"}
    r: PositiveInt = 64
    """Shard size: r x d_out parameters per layer."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the adapter's input."""

    def factors(self, layer: Any, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        shard = layer.miss_block[adapter]  # (r, d_out)
        r = shard.shape[0]
        tiled = torch.eye(r, device=shard.device).repeat(1, math.ceil(layer.in_features / r))[:, : layer.in_features]
        return tiled, shard.T


METHODS.register("miss", MiSSConfig, "MiSS (Bone): one shard shared by all input groups, rank <= r")
