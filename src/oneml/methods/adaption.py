"""LLaMA-Adapter: adaption prompts with zero-init attention (Zhang et al. 2023, https://arxiv.org/abs/2303.16199).

The top L layers get m trained prompt vectors; each attention attends to them through its own frozen projections,
and a zero-initialised gate lets them in gradually:

    attn_l(x) = softmax(Q K^T / sqrt(d)) V + g_l softmax(Q K_p^T / sqrt(d)) V_p,   K_p, V_p = W_k P_l, W_v P_l,
    P_l: (m x d) trained,  g_l = 0 at init (so the model starts as the base)

peft supports it for the Llama, Mistral and GPT-2 families only (a Qwen2 model is refused in one line when it loads).
The gated branch is not a weight: not mergeable. A 4-bit base works in a bfloat16 model (the gated branch is not
cast back to the activations' dtype).

peft's wrapper copies the model's ``forward`` when it is built, so a head installed on the model afterwards (TRL's
fused LM head, oneml's chunked one) would be skipped; `late_forward` makes the wrapper call whatever ``forward`` the
model has at call time.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import PeftTuner


class AdaptionPromptConfig(PeftTuner):
    name: Literal["adaption_prompt"] = "adaption_prompt"
    complexity: ClassVar[tuple[float, str]] = (9.5, "gated prompts inside attention: some architectures, no merge")
    mergeable: ClassVar[bool] = False
    peft_type: ClassVar[str] = "ADAPTION_PROMPT"
    quantized_needs_bfloat16: ClassVar[bool] = True
    adapter_len: PositiveInt = 10
    """m: prompt vectors per adapted layer (the paper's 10)."""
    adapter_layers: PositiveInt | None = None
    """L: adapted layers, counted from the top; unset = every layer."""

    def peft_kwargs(self, model: torch.nn.Module) -> dict[str, Any]:
        depth = model.config.get_text_config().num_hidden_layers
        return {"adapter_len": self.adapter_len, "adapter_layers": min(self.adapter_layers or depth, depth)}

    def prepare(self, model: Any) -> Any:
        return late_forward(model)


def late_forward(peft_model: Any) -> Any:
    """Route peft's AdaptionPromptModel to the wrapped model's current ``forward`` (it keeps a copy of the one
    the model had when peft wrapped it, as an instance attribute)."""
    adapted = peft_model.base_model

    def forward(*args: Any, **kwargs: Any) -> Any:
        return adapted.model.forward(*args, **kwargs)

    adapted.forward = forward
    return peft_model


METHODS.register("adaption_prompt", AdaptionPromptConfig, "LLaMA-Adapter: gated adaption prompts in the top layers")
