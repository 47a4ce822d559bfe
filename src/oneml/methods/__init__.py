"""The fine-tuning methods: one file each, all behind `MethodConfig.apply(model)`.

`methods/` never imports `objectives/`: a method changes which weights train, not what they learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from oneml.registry import Registry
from oneml.schema import Section

if TYPE_CHECKING:
    import torch


class MethodConfig(Section):
    """Base of every method config; ``name`` selects it in YAML (``method: {name: lora}``)."""

    name: str
    is_adapter: ClassVar[bool] = True
    """True when the result is a small adapter saved apart from the base (peft); False for full weights."""

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        """Return the model prepared for training: trainable weights unfrozen, the rest frozen."""
        raise NotImplementedError


METHODS: Registry[type[MethodConfig]] = Registry("method")

# Importing a method module registers it (its last line).
from oneml.methods import full, lora  # noqa: E402,F401
