"""GaLore: gradient low-rank projection (Zhao et al. 2024, https://arxiv.org/abs/2403.03507), from its authors'
package galore-torch.

Every weight trains, as in full fine-tuning; what shrinks is the optimizer state of the targeted linear layers.
For a gradient G (m x n, m >= n) the optimizer keeps Adam's moments of the projection R = G P^T, P (r x n) the top-r
right singular vectors of G, recomputed every ``update_proj_gap`` steps:

    R_t = G_t P^T,   M, V = Adam moments of R (m x r instead of m x n),   W <- W - lr * scale * (N_t P)

with N_t Adam's normalised step in the projected space (the left vectors when m < n). The state of the other
weights (embeddings, norms, the output head) is plain AdamW's. The result is a full model: saved, loaded and merged
as ``full``'s. transformers offers the same optimizer through ``optim: galore_adamw``; oneml builds it directly
(``galore_torch.GaLoreAdamW``, the parameter groups transformers would build), so that the run's one optimizer path
serves every method. The layer-wise variant (an optimizer step per parameter inside backward) is not offered: it
bypasses gradient clipping, accumulation and the learning-rate schedule the other methods train with.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt, field_validator

from oneml.methods import METHODS, MethodContext, OptimizerBuilder
from oneml.methods.full import FullConfig
from oneml.methods.optimizers import OWN_OPTIMIZER_UNDER_FSDP, decay_groups, needs_package
from oneml.methods.targets import check_targets, linear_module_names


class GaLoreConfig(FullConfig):
    name: Literal["galore"] = "galore"
    complexity: ClassVar[tuple[float, str]] = (
        11.5,
        "full fine-tuning through a low-rank gradient projection: rank, refresh gap, scale; full checkpoints",
    )
    package: ClassVar[tuple[str, str]] = ("galore_torch", "galore-torch")
    fixed_optimizer: ClassVar[str | None] = "galore_adamw"
    """(module, pip package) of the optimizer."""
    rank: PositiveInt = 128
    """r: the projected gradient's rank (transformers' default; the paper uses 128 to 512 for 1B to 7B models)."""
    update_proj_gap: PositiveInt = 200
    """Steps between refreshes of the projection (an SVD of the gradient, or a new random matrix for APOLLO)."""
    scale: float = Field(default=0.25, gt=0)
    """Multiplies the projected-back update (the paper's alpha)."""
    proj_type: Literal["std", "reverse_std", "left", "right", "full"] = "std"
    """Which side is projected: std = the smaller dimension (the paper's choice)."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Short names of the linear layers whose gradients are projected; the rest train with plain AdamW."""

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and not value:
            raise ValueError("must name at least one module, or be 'all-linear'")
        return value

    def check(self, ctx: MethodContext) -> None:
        needs_package(self.name, *self.package)

    def apply(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        check_targets(model, self.target_modules)
        return super().apply(model, ctx)

    def sharding_refusal(self) -> str | None:
        return OWN_OPTIMIZER_UNDER_FSDP.format(name=self.name, what=self.optimizer_class().__name__)

    def multiprocess_refusal(self, strategy: str) -> str | None:
        if strategy in ("zero2", "zero3"):
            return (
                f"{strategy} flattens and partitions the optimizer's parameters, and method {self.name} projects each "
                "weight's gradient as a matrix; use ddp"
            )
        return None

    def optimizer_class(self) -> Any:
        from galore_torch import GaLoreAdamW

        return GaLoreAdamW

    def projection(self) -> dict[str, Any]:
        """The settings of the projected parameter group (galore-torch's group keys)."""
        return {
            "rank": self.rank,
            "update_proj_gap": self.update_proj_gap,
            "scale": self.scale,
            "proj_type": self.proj_type,
        }

    def optimizer(
        self, model: torch.nn.Module, learning_rate: float, weight_decay: float, build: OptimizerBuilder | None = None
    ) -> Any:
        needs_package(self.name, *self.package)
        projected = projected_weights(model, self.target_modules)
        rest = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n not in projected]
        groups = decay_groups(rest, weight_decay)
        groups.append({"params": list(projected.values()), "weight_decay": weight_decay, **self.projection()})
        return self.optimizer_class()(groups, lr=learning_rate, weight_decay=weight_decay, no_deprecation_warning=True)


def projected_weights(model: torch.nn.Module, targets: list[str] | str) -> dict[str, torch.nn.Parameter]:
    """The weights of the targeted linear layers (never the output head), by parameter name."""
    names = linear_module_names(model) if targets == "all-linear" else targets
    projected = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in names and module.weight.requires_grad:
            projected[f"{name}.weight"] = module.weight
    return projected


METHODS.register(
    "galore", GaLoreConfig, "GaLore: full fine-tuning with Adam states of rank-r projected gradients (galore-torch)"
)
