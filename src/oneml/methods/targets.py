"""Which modules of a model a method can adapt, and a clear error when a pattern matches none."""

from __future__ import annotations

import re

import torch

from oneml.errors import OnemlError


def _is_linear(module: torch.nn.Module) -> bool:
    # transformers' Conv1D (GPT-2 style) is a linear layer with transposed weights; peft adapts it too.
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def linear_module_names(model: torch.nn.Module, exclude_head: bool = True) -> list[str]:
    """The distinct short names (``q_proj``, ``fc1``...) of the model's linear layers."""
    names: list[str] = []
    head = output_head_name(model)
    for full_name, module in model.named_modules():
        if not _is_linear(module):
            continue
        short = full_name.rsplit(".", 1)[-1]
        if exclude_head and short == head:
            continue
        if short not in names:
            names.append(short)
    return names


def output_head_name(model: torch.nn.Module) -> str:
    """The short name of the model's output layer: the LM head, or a sequence-classification model's head (the
    module beside the decoder: ``score``), which methods leave unadapted and unquantized."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is None:
        beside = [name for name, _ in model.named_children() if name != getattr(model, "base_model_prefix", None)]
        if len(beside) == 1:
            return beside[0]
    if head is not None:
        for name, module in model.named_modules():
            if module is head:
                return name.rsplit(".", 1)[-1]
    return "lm_head"


def check_targets(model: torch.nn.Module, targets: list[str] | str, field: str = "method.target_modules") -> None:
    """Refuse target patterns that match no linear layer, listing the ones the model has."""
    if targets == "all-linear":
        return
    available = linear_module_names(model)
    full_names = [n for n, m in model.named_modules() if _is_linear(m)]
    missing = []
    for pattern in [targets] if isinstance(targets, str) else targets:
        if pattern in available:
            continue
        if any(n == pattern or n.endswith("." + pattern) for n in full_names):
            continue
        try:
            if isinstance(targets, str) and any(re.fullmatch(pattern, n) for n in full_names):
                continue
        except re.error:
            pass
        missing.append(pattern)
    if missing:
        raise OnemlError(
            f"{field}: {', '.join(missing)} match no linear layer of this model; it has: {', '.join(available)}"
        )


def adapted_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, str]]:
    """(name, layer, adapter) for every peft LoRA layer of ``model`` with an active adapter.

    ``name`` is the layer's path inside the base model (``model.layers.0.self_attn.q_proj``), the same whether
    the model is a PeftModel or not.
    """
    from peft.tuners.lora import LoraLayer

    layers = []
    for full_name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    layers.append((full_name.removeprefix("base_model.model."), module, adapter))
    return layers
