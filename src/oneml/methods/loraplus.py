"""LoRA+: a larger learning rate for B than for A (Hayou et al. 2024, https://arxiv.org/abs/2402.12354).

With width n, A ~ O(1/sqrt(n)) entries and B = 0 at init, the same rate for both is inefficient: feature learning
needs lr_B / lr_A = Theta(n). In practice

    lr_B = ratio x lr,   lr_A = lr   (ratio 16 by default; the paper's sweet spot is 2^4 for LLaMA-size models)

Every other trainable weight (DoRA magnitudes, biases, SORSA's singular values) keeps lr; adapters on embedding
layers get the reference implementation's fixed 1e-6. (peft's ``create_loraplus_optimizer`` also puts 1-D weights
in B's group; we keep them at lr.) Any LoRA-family method gets the same through ``loraplus_ratio``; the groups are
built in lora.py (``loraplus_groups``) and handed to AdamW by the runner.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from oneml.methods import METHODS
from oneml.methods.lora import LoRAConfig


class LoRAPlusConfig(LoRAConfig):
    name: Literal["loraplus"] = "loraplus"
    complexity: ClassVar[tuple[float, str]] = (2, "LoRA plus one learning-rate ratio for B")
    loraplus_ratio: float = Field(default=16.0, gt=0)
    """Learning rate of every B = ratio x lr (A and the rest keep lr)."""


METHODS.register("loraplus", LoRAPlusConfig, "LoRA+: LoRA with B's learning rate = ratio x A's (default 16)")
