"""LN tuning: tune only the layer norms (Zhao et al. 2023, https://arxiv.org/abs/2312.11420).

Every normalisation layer's gain (and bias, where it has one) trains; nothing else does and nothing is added:

    y = gamma * (x - mu) / sigma + beta      (RMSNorm: y = gamma * x / rms(x)),   gamma, beta trained

A few thousand parameters for a whole model, no hyperparameter but the targets. peft keeps a trained copy of each
norm, which replaces the original on merge (exactly). A 4-bit base leaves the norms in float: trains as is. Not
low-rank: no kappa.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from oneml.methods import METHODS
from oneml.methods.tuners import PeftTuner


class LNTuningConfig(PeftTuner):
    name: Literal["ln_tuning"] = "ln_tuning"
    complexity: ClassVar[tuple[float, str]] = (1.3, "only the norms train: no size to choose, merges exactly")
    peft_type: ClassVar[str] = "LN_TUNING"
    target_modules: list[str] | None = None
    """Names of the norm layers to tune; unset = peft's choice for the architecture (every norm of Llama, Qwen2...)."""


METHODS.register("ln_tuning", LNTuningConfig, "LN tuning: only the layer norms train")
