"""Prompt tuning (Lester et al. 2021, https://arxiv.org/abs/2104.08691).

m trained virtual token embeddings are put before every input; the model itself is untouched:

    input = [P ; E(x)],   P: (m x d) trained,   labels of the m positions ignored

so the parameters are m x d whatever the depth. ``init``: random (peft's default) or sample_vocab (P starts as the
embeddings of m random vocabulary tokens, which trains faster). peft lengthens the sequence by m (logits and labels
too; TRL's fused LM head and oneml's token evaluation see the same labels, the first m ignored), so packing is
switched off, as for every prompt-learning method. Not mergeable (P is an input, not a weight); any base, 4-bit
included, since no layer is wrapped.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import PeftTuner


class PromptTuningConfig(PeftTuner):
    name: Literal["prompt_tuning"] = "prompt_tuning"
    complexity: ClassVar[tuple[float, str]] = (8.5, "virtual input tokens: longer sequences, no merge")
    mergeable: ClassVar[bool] = False
    peft_type: ClassVar[str] = "PROMPT_TUNING"
    fsdp_refusal: ClassVar[str | None] = (
        "peft looks the virtual tokens up with a plain index tensor in the sharded table"
    )
    num_virtual_tokens: PositiveInt = 20
    """m: virtual tokens put before every input."""
    init: Literal["random", "sample_vocab"] = "random"
    """random: N(0, 1) embeddings (peft's default); sample_vocab: the embeddings of m random vocabulary tokens."""

    def peft_kwargs(self, model: torch.nn.Module) -> dict[str, Any]:
        return {"num_virtual_tokens": self.num_virtual_tokens, "prompt_tuning_init": self.init.upper()}


METHODS.register("prompt_tuning", PromptTuningConfig, "Prompt tuning: m trained virtual input tokens")
