"""LISA: layerwise importance sampled AdamW (Pan et al. 2024, https://arxiv.org/abs/2403.17919).

Full fine-tuning where, for each period of ``interval`` optimizer steps (K), only ``layers`` decoder layers (gamma),
drawn uniformly without replacement, train beside the parts outside the decoder layers (embeddings, final norm,
output head), which always train, as in the paper's Algorithm 1:

    for period p = 0, 1, ...:  freeze every decoder layer; unfreeze gamma of them drawn at random; K AdamW steps

A layer that leaves the sample drops its AdamW state (the paper runs AdamW afresh on each period's layers), so
memory is the model plus gradients and Adam state of the always-on parts and gamma layers. The draw of period p is
seeded by (train.seed, p) and consumes nothing from the global random stream, so a resumed run trains the same
layers as an uninterrupted one, and dropout masks are those of any other method. The result is a full model,
saved, loaded and merged as ``full``'s.

No maintained package provides LISA as a library: its reference implementation is a callback inside LMFlow's
fine-tuner (LMFlow on PyPI is a 2023 placeholder without it). It is ~50 lines here, on the Trainer's callbacks.
BAdam (badam.py) is the packaged, related block-coordinate method.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar, Literal

import torch
from pydantic import PositiveInt
from transformers import TrainerCallback

from oneml.errors import OnemlError
from oneml.methods import METHODS, MethodContext, OptimizerBuilder, adamw
from oneml.methods.full import FullConfig
from oneml.methods.optimizers import OWN_OPTIMIZER_UNDER_FSDP, decay_groups, decoder_layers


class LISAConfig(FullConfig):
    name: Literal["lisa"] = "lisa"
    complexity: ClassVar[tuple[float, str]] = (
        11.3,
        "full fine-tuning of a few sampled layers at a time: how many and how often; full checkpoints",
    )
    builds_optimizer: ClassVar[bool] = True  # over every parameter: a layer drawn later must already be in it
    layers: PositiveInt = 2
    """gamma: decoder layers trained in each period (the paper's 2), beside embeddings, final norm and head."""
    interval: PositiveInt = 20
    """K: optimizer steps between draws of the trained layers (LMFlow's example value)."""

    def apply(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        blocks = decoder_layers(model, self.name)
        if self.layers > len(blocks):
            raise OnemlError(f"method.layers: at most this model's {len(blocks)} decoder layers, got {self.layers}")
        for param in model.parameters():
            param.requires_grad_(True)
        activate(blocks, sampled(len(blocks), self.layers, ctx.seed, 0))
        return model

    def sharding_refusal(self) -> str | None:
        return OWN_OPTIMIZER_UNDER_FSDP.format(name=self.name, what="AdamW over every layer")

    def multiprocess_refusal(self, strategy: str) -> str | None:
        return (
            f"method {self.name} switches which layers train as it goes, which {strategy} cannot follow (it registers "
            "the trainable parameters once); train in one process (distributed.nproc: 1)"
        )

    def optimizer(
        self, model: torch.nn.Module, learning_rate: float, weight_decay: float, build: OptimizerBuilder | None = None
    ) -> Any:
        # Over every parameter, frozen ones included: a layer drawn later must already be in the optimizer (the
        # Trainer would build one over the parameters trainable now); AdamW skips parameters without a gradient.
        named = list(model.named_parameters())
        return (build or adamw)(decay_groups(named, weight_decay), learning_rate, weight_decay)  # train.optim's kind

    def callbacks(self, model: torch.nn.Module, ctx: MethodContext) -> list[Any]:
        return [LayerSampling(decoder_layers(model, self.name), self.layers, self.interval, ctx)]


def sampled(count: int, gamma: int, seed: int, period: int) -> list[int]:
    """The decoder layers trained in ``period``: gamma of ``count``, drawn from a generator seeded by (seed, period)."""
    return sorted(random.Random(f"lisa-{seed}-{period}").sample(range(count), gamma))


def activate(blocks: dict[int, list[torch.nn.Parameter]], chosen: list[int]) -> None:
    for index, params in blocks.items():
        for param in params:
            param.requires_grad_(index in chosen)
            if index not in chosen:
                param.grad = None


class LayerSampling(TrainerCallback):
    """Draws the period's layers before its first step; frozen layers drop their gradients and AdamW state."""

    def __init__(self, blocks: dict[int, list[torch.nn.Parameter]], gamma: int, interval: int, ctx: MethodContext):
        self.blocks, self.gamma, self.interval = blocks, gamma, interval
        self.seed, self.log_metrics = ctx.seed, ctx.log_metrics
        self.current: list[int] | None = None

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        chosen = sampled(len(self.blocks), self.gamma, self.seed, state.global_step // self.interval)
        if chosen == self.current:
            return
        activate(self.blocks, chosen)
        if optimizer is not None:
            for index, params in self.blocks.items():
                if index not in chosen:
                    for param in params:
                        optimizer.state.pop(param, None)
        self.current = chosen
        self.log_metrics({f"lisa_layer_{i}": float(i in chosen) for i in self.blocks}, state.global_step)


METHODS.register("lisa", LISAConfig, "LISA: full fine-tuning of a few randomly sampled decoder layers at a time")
