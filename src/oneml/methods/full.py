"""Full fine-tuning: every weight trains. The baseline every study can include."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from oneml.methods import METHODS, MethodConfig


class FullConfig(MethodConfig):
    name: Literal["full"] = "full"
    is_adapter: ClassVar[bool] = False

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        return apply(model, self)


def apply(model: torch.nn.Module, cfg: FullConfig) -> torch.nn.Module:
    for param in model.parameters():
        param.requires_grad_(True)
    return model


METHODS.register("full", FullConfig, "Full fine-tuning: all weights train (the baseline)")
