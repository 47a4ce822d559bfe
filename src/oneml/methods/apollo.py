"""APOLLO: approximated gradient scaling for memory-efficient LLM optimization (Zhu et al. 2024,
https://arxiv.org/abs/2412.05270), from its authors' package apollo-torch.

GaLore's layout (galore.py), with a cheaper projection and a different update: the gradient G of a targeted layer is
projected by a random matrix P (r x n, refreshed every ``update_proj_gap`` steps, no SVD), Adam's moments are kept for
R = G P^T only, and they decide a per-channel (or per-tensor) scale of the raw gradient instead of the update itself:

    s_j = ||N_t[:, j]|| / ||R_t[:, j]||   (N_t Adam's normalised step of R),   W <- W - lr * sqrt(scale) * G * s

(with the norm-growth limiter of Fira on the scaled gradient). ``rank: 1`` with ``scale_type: tensor`` is APOLLO-Mini,
SGD-like memory. transformers offers it as ``optim: apollo_adamw``; oneml builds ``apollo_torch.APOLLOAdamW`` directly,
with the groups transformers would build.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from oneml.methods import METHODS
from oneml.methods.galore import GaLoreConfig


class APOLLOConfig(GaLoreConfig):
    name: Literal["apollo"] = "apollo"
    complexity: ClassVar[tuple[float, str]] = (
        11.6,
        "full fine-tuning with random-projection gradient scaling: rank, projection, scale type and scale",
    )
    package: ClassVar[tuple[str, str]] = ("apollo_torch", "apollo-torch")
    fixed_optimizer: ClassVar[str | None] = "apollo_adamw"
    proj: Literal["random", "svd"] = "random"
    """How the projection is drawn: random (APOLLO's, no SVD) or svd (GaLore's)."""
    scale_type: Literal["channel", "tensor"] = "channel"
    """One gradient scale per channel, or one per tensor (APOLLO-Mini, with rank 1)."""
    scale: float = Field(default=1.0, gt=0)
    """The update is multiplied by sqrt(scale) (APOLLO-Mini uses 128 with rank 1)."""

    def optimizer_class(self) -> Any:
        from apollo_torch import APOLLOAdamW

        return APOLLOAdamW

    def projection(self) -> dict[str, Any]:
        return super().projection() | {"proj": self.proj, "scale_type": self.scale_type}


METHODS.register(
    "apollo", APOLLOConfig, "APOLLO: full fine-tuning, gradients scaled by Adam states of a random projection"
)
