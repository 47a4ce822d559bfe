"""What the memory-efficient full fine-tuning methods share (a helper, not a method): GaLore, APOLLO, BAdam and LISA
train every weight of the model, as `full` does, and save, load and merge as it does; what differs is the optimizer
(a low-rank or block-wise one, from its own package) or which layers train at a time.

They bring their own optimizer (`MethodConfig.optimizer`), so the run hands it to the Trainer, which transformers
refuses under FSDP; BAdam and LISA also switch which layers train as they go, which a process group cannot follow
(DDP registers the trainable parameters once), so they train in one process.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import torch

from oneml.errors import OnemlError

OWN_OPTIMIZER_UNDER_FSDP = (
    "pass method {name}'s own optimizer ({what}) to the Trainer, which transformers refuses under FSDP; use strategy "
    "ddp"
)
"""`sharding_refusal` of a method that brings its own optimizer."""


def needs_package(method: str, module: str, package: str) -> None:
    """One line naming the package to install when ``module`` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise OnemlError(
            f"method {method}: needs the {package} package, which is not installed (pip install {package}, or "
            "pip install 'oneml[memory]')"
        )


def decay_groups(params: list[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices (linear weights, embeddings), none on vectors (biases, norms)."""
    matrices = [p for _, p in params if p.ndim >= 2]
    vectors = [p for _, p in params if p.ndim < 2]
    groups = [{"params": matrices, "weight_decay": weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


LAYER_LIST = re.compile(r"^(?P<prefix>(?:.*\.)?layers)\.(?P<index>\d+)\.")
"""A decoder layer's parameters, ``model.layers.<i>.``: the blocks BAdam and LISA switch between (BAdam's own rule)."""


def decoder_layers(model: torch.nn.Module, method: str) -> dict[int, list[torch.nn.Parameter]]:
    """Decoder layer index -> its parameters; a model whose layers are not a ``layers`` list is refused."""
    layers: dict[int, list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        match = LAYER_LIST.match(name)
        if match:
            layers.setdefault(int(match["index"]), []).append(param)
    if not layers:
        raise OnemlError(
            f"method {method}: switches between decoder layers found under a 'layers' list (model.layers.<i>), and "
            "this model has none; use method full or galore"
        )
    return layers
