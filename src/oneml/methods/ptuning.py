"""P-tuning (Liu et al. 2021, "GPT Understands, Too", https://arxiv.org/abs/2103.10385).

Prompt tuning whose m virtual tokens come out of a small trained encoder, which the paper found more stable than
free embeddings:

    input = [f(P) ; E(x)],   P: (m x d),  f = MLP d -> h -> h -> d  (or a bidirectional LSTM + MLP)

After training only f(P) matters, but peft saves the encoder. Sequences grow by m as for prompt tuning (packing
off). Not mergeable; any base, 4-bit included.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import PeftTuner


class PTuningConfig(PeftTuner):
    name: Literal["p_tuning"] = "p_tuning"
    complexity: ClassVar[tuple[float, str]] = (8.7, "virtual tokens from a trained encoder: longer inputs, no merge")
    mergeable: ClassVar[bool] = False
    peft_type: ClassVar[str] = "P_TUNING"
    fsdp_refusal: ClassVar[str | None] = (
        "peft looks the virtual tokens up with a plain index tensor in the sharded table"
    )
    num_virtual_tokens: PositiveInt = 20
    """m: virtual tokens put before every input."""
    encoder: Literal["mlp", "lstm"] = "mlp"
    """The prompt encoder f: an MLP, or a bidirectional LSTM followed by an MLP."""
    encoder_hidden_size: PositiveInt | None = None
    """h: the encoder's hidden width; unset = the model's hidden size."""
    encoder_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout inside the encoder."""

    def peft_kwargs(self, model: torch.nn.Module) -> dict[str, Any]:
        hidden = self.encoder_hidden_size or model.config.get_text_config().hidden_size
        return {
            "num_virtual_tokens": self.num_virtual_tokens,
            "encoder_reparameterization_type": self.encoder.upper(),
            "encoder_hidden_size": hidden,
            "encoder_dropout": self.encoder_dropout,
        }


METHODS.register("p_tuning", PTuningConfig, "P-tuning: virtual input tokens from a trained MLP/LSTM")
