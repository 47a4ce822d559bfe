"""IA3: infused adapter by inhibiting and amplifying inner activations (Liu et al. 2022,
https://arxiv.org/abs/2205.05638).

Learned vectors rescale the keys, the values and the MLP's inner activation, elementwise:

    k = l_k * (W_k x),   v = l_v * (W_v x),   y = W_down (l_ff * h),   l_k, l_v, l_ff initialised to 1

(peft scales a layer's output, or its input for ``feedforward_modules``). No rank to choose: the parameters are one
vector per targeted layer. A rescaled row or column of W is still a W, so it merges; trains on a 4-bit base.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from oneml.errors import OnemlError
from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class IA3Config(LayerTuner):
    name: Literal["ia3"] = "ia3"
    complexity: ClassVar[tuple[float, str]] = (1.5, "one scaling vector per layer: no rank, no alpha; merges")
    peft_type: ClassVar[str] = "IA3"
    target_modules: list[str] | Literal["all-linear"] = Field(default_factory=lambda: ["k_proj", "v_proj", "down_proj"])
    """Layers whose output (or, for feedforward_modules, input) is rescaled; the paper's keys, values and MLP."""
    feedforward_modules: list[str] = Field(default_factory=lambda: ["down_proj"])
    """The targets rescaled on their input (the MLP's inner activation) rather than their output."""

    @model_validator(mode="after")
    def _feedforward_in_targets(self) -> IA3Config:
        targets = self.target_modules
        extra = [] if targets == "all-linear" else [m for m in self.feedforward_modules if m not in targets]
        if extra:
            raise OnemlError(f"method.feedforward_modules: {', '.join(extra)} must be in method.target_modules too")
        return self


METHODS.register("ia3", IA3Config, "IA3: learned vectors rescale keys, values and the MLP activation")
