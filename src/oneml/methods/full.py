"""Full fine-tuning: every weight trains. The baseline every study can include."""

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
    for param in model.parameters():
        param.requires_grad_(True)
    return model


METHODS.register("full", FullConfig, "Full fine-tuning: all weights train (the baseline)")
