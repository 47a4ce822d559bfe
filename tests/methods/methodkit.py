"""What the method tests share: a fresh tiny model, a fixed input, and logits on it."""

from __future__ import annotations

import torch

from oneml.config import ModelConfig
from oneml.methods import MethodContext
from oneml.models import load_model_and_tokenizer

CTX = MethodContext()
IDS = torch.randint(0, 255, (2, 12), generator=torch.Generator().manual_seed(1))


def tiny() -> torch.nn.Module:
    return load_model_and_tokenizer(ModelConfig(name="tiny-llama"))[0]


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IDS).logits
