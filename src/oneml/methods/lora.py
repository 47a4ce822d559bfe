"""LoRA: low-rank adaptation (Hu et al. 2021, https://arxiv.org/abs/2106.09685).

A frozen weight W0 (d_out x d_in) is adapted as  W = W0 + (alpha / r) * B A,  with A (r x d_in)
random, B (d_out x r) zero at init, so training starts from the base model exactly. rsLoRA
(https://arxiv.org/abs/2312.03732) scales by alpha / sqrt(r) instead, which keeps the update's size
stable as r grows. peft does the work; this file maps our config onto it and checks the targets.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt, field_validator

from oneml.methods import METHODS, MethodConfig, MethodContext
from oneml.methods.targets import check_targets


class LoRAConfig(MethodConfig):
    name: Literal["lora"] = "lora"
    r: PositiveInt = 16
    """Rank of the update B A."""
    alpha: float = Field(default=32.0, gt=0)
    """Scale numerator: the update is multiplied by alpha / r (alpha / sqrt(r) with rslora)."""
    dropout: float = Field(default=0.05, ge=0, lt=1)
    """Dropout on the adapter's input."""
    target_modules: list[str] | Literal["all-linear"] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    """Short names of the linear layers to adapt (q_proj, v_proj, ...), or "all-linear"."""
    rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(r)."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases train alongside the adapter."""

    @field_validator("r", mode="before")
    @classmethod
    def _r_message(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            raise ValueError("must be a positive integer")
        return value

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and not value:
            raise ValueError("must name at least one module, or be 'all-linear'")
        return value

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            use_rslora=self.rslora,
            bias=self.bias,
            task_type="CAUSAL_LM",
        )

    def apply(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        return apply(model, self, ctx)


def apply(model: torch.nn.Module, cfg: LoRAConfig, ctx: MethodContext) -> torch.nn.Module:
    from peft import get_peft_model

    check_targets(model, cfg.target_modules)
    return get_peft_model(model, cfg.peft_config())


METHODS.register("lora", LoRAConfig, "LoRA: frozen base + trainable low-rank update (alpha/r) B A; rsLoRA option")
