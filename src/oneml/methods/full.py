"""Full fine-tuning: every weight trains. The baseline every study can include.

Precision: on a GPU, where the model loads in bfloat16 by oneml's choice (``model.dtype: auto``), the weights are
kept in float32 (master weights, AdamW states in float32 too) and the forward runs in bfloat16 under autocast,
as the mixed-precision recipe does; a bfloat16 weight cannot take an update smaller than 2^-8 of itself, which
a learning rate of 1e-5 is for most weights. That costs 16 bytes per parameter (weight, gradient, two AdamW
moments) instead of 8; a model that does not fit so trains in pure bfloat16 when ``model.dtype: bfloat16`` is
set explicitly. Each run records which recipe it used (``oneml.switch.precision``).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import torch

from oneml.methods import METHODS, MethodConfig, MethodContext


class FullConfig(MethodConfig):
    name: Literal["full"] = "full"
    complexity: ClassVar[tuple[float, str]] = (
        11,
        "a full copy of the weights per task: largest memory, checkpoints and serving cost",
    )
    is_adapter: ClassVar[bool] = False

    def apply(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        return apply(model, self, ctx)

    def load(self, base: torch.nn.Module, path: Path) -> torch.nn.Module:
        from safetensors.torch import load_file

        state = {}
        for shard in sorted(Path(path).glob("*.safetensors")):
            state.update(load_file(shard))
        # Tied weights are saved once; strict=False tolerates the missing alias, and we check nothing else is missing.
        missing, unexpected = base.load_state_dict(state, strict=False)
        tied = set(getattr(base, "_tied_weights_keys", None) or [])
        if unexpected or set(missing) - tied - {"lm_head.weight"}:
            raise ValueError(f"full model at {path} does not match the base: missing {missing}, extra {unexpected}")
        return base

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        return model


def apply(model: torch.nn.Module, cfg: FullConfig, ctx: MethodContext) -> torch.nn.Module:
    master = getattr(torch, ctx.master_dtype) if ctx.master_dtype else None
    for param in model.parameters():
        if master is not None and param.is_floating_point() and torch.finfo(param.dtype).bits < 32:
            param.data = param.data.to(master)  # tied weights share the Parameter, so they stay tied
        param.requires_grad_(True)
    return model


METHODS.register("full", FullConfig, "Full fine-tuning: all weights train (the baseline)")
