"""VB-LoRA: extreme parameter-efficient fine-tuning with a vector bank (Li et al. 2024,
https://arxiv.org/abs/2405.15179).

Every adapted layer's LoRA factors are cut into sub-vectors of length L, and each sub-vector is a top-k mixture of
one vector bank shared by the whole model:

    W = W0 + B A,   every L-long piece of A (r x d_in) and B (d_out x r) = sum_{j in top-k(z)} softmax(z)_j b_j,
    bank {b_1, ..., b_h} (h x L) shared, logits z trained per piece

so the trained parameters are the bank plus k-sparse logits. L = ``vector_length`` must divide every target's
d_in and d_out: oneml's default is 64 (peft's 256 does not divide SmolLM2's 576). Rank <= r: kappa(B A) is
logged. The bank and all logits are saved (not only the top-k: the adapter can be merged and resumed). Trains on a
4-bit base. Mergeable.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class VBLoRAConfig(LayerTuner):
    name: Literal["vblora"] = "vblora"
    complexity: ClassVar[tuple[float, str]] = (3.9, "a shared vector bank with top-k mixing: r, bank size, length, k")
    peft_type: ClassVar[str] = "VBLORA"
    renamed: ClassVar[dict[str, str]] = {"dropout": "vblora_dropout"}
    pinned: ClassVar[dict[str, Any]] = {"save_only_topk_weights": False}
    fsdp_refusal: ClassVar[str | None] = (
        "its vector bank is one parameter shared by every layer, not one per sharding unit"
    )
    r: PositiveInt = 4
    """Rank of the composed update B A."""
    num_vectors: PositiveInt = 256
    """h: vectors in the shared bank."""
    vector_length: PositiveInt = 64
    """L: length of each bank vector (must divide every target's input and output size)."""
    topk: PositiveInt = 2
    """k: bank vectors mixed into each piece."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the adapter's input."""

    def factors(self, layer: Any, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        return layer._get_lora_matrices(adapter)  # peft's own composition of A and B from the bank


METHODS.register("vblora", VBLoRAConfig, "VB-LoRA: LoRA factors composed from one shared vector bank")
