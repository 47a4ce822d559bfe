"""Trainable tokens: train the embedding rows of chosen tokens only (peft's TrainableTokens; the targeted form of
training new or special token embeddings, as for a chat template's markers).

    E'[i] = E[i] + Delta_i  for i in I,   E'[j] = E[j] otherwise,   Delta: (|I| x d) trained, zero at init

``token_indices`` unset = the model's special tokens (bos, eos, pad: the ones a chat template adds), read from the
model's config. Only on models with untied embeddings (only the input rows train; the output head is another
matrix): with tied ones peft adapts the tied head too, and TRL's trainers refuse an adapter on the LM head, so
such a model (SmolLM2, Qwen2.5-0.5B) is refused in one line. Merging writes the rows into the embedding: exact.
Any base, 4-bit included (embeddings stay float). No kappa.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from oneml.errors import OnemlError
from oneml.methods import METHODS
from oneml.methods.tuners import PeftTuner


class TrainableTokensConfig(PeftTuner):
    name: Literal["trainable_tokens"] = "trainable_tokens"
    complexity: ClassVar[tuple[float, str]] = (1.7, "a few embedding rows: which tokens is the only choice; merges")
    peft_type: ClassVar[str] = "TRAINABLE_TOKENS"
    token_indices: list[int] | None = None
    """Token ids whose embedding rows train; unset = the model's special tokens (bos, eos, pad)."""

    def peft_kwargs(self, model: torch.nn.Module) -> dict[str, Any]:
        return {"token_indices": self.token_indices or special_ids(model)}

    def check_model(self, model: torch.nn.Module) -> None:
        super().check_model(model)
        head = model.get_output_embeddings()
        if head is not None and head.weight is model.get_input_embeddings().weight:
            raise OnemlError(
                "method trainable_tokens: this model ties its output head to its input embedding, so peft trains "
                "the head's rows too, through an adapter on lm_head, which TRL's trainers refuse (they compute "
                "log-probs from lm_head.weight itself); use it on a model with untied embeddings"
            )
        rows = model.get_input_embeddings().num_embeddings
        bad = [i for i in self.token_indices or [] if not 0 <= i < rows]
        if bad:
            raise OnemlError(f"method.token_indices: {bad} outside the vocabulary (0..{rows - 1})")


def special_ids(model: torch.nn.Module) -> list[int]:
    config = model.config.get_text_config()
    ids: set[int] = set()
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(config, key, None)
        ids.update(value if isinstance(value, list) else [] if value is None else [value])
    if not ids:
        raise OnemlError("method.token_indices: the model names no special token; list the ids to train")
    return sorted(ids)


METHODS.register("trainable_tokens", TrainableTokensConfig, "Trainable tokens: only chosen embedding rows train")
