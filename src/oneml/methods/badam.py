"""BAdam: block coordinate descent with Adam (Luo et al. 2024, https://arxiv.org/abs/2404.02827), from its authors'
package badam (the one LLaMA-Factory uses).

Full fine-tuning one block at a time: the decoder layers are the blocks; for ``switch_every`` optimizer steps only
the active block trains (Adam on a float32 copy of it), then its optimizer state is dropped and the next block
starts, in the order ``switch_mode`` gives (ascending, descending, random: a fresh permutation per pass over the
blocks, or fixed). Memory is the model, one block's gradients and one block's Adam state. The embeddings, final norm
and output head do not train (BAdam's default blocks). The result is a full model, saved, loaded and merged as
``full``'s. The package prints every block switch; oneml keeps its output quiet.

A resumed run restarts the block order (BAdam keeps its position outside the saved optimizer state).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, ClassVar, Literal

import torch
from pydantic import PositiveInt

from oneml.methods import METHODS, MethodContext, OptimizerBuilder
from oneml.methods.full import FullConfig
from oneml.methods.optimizers import OWN_OPTIMIZER_UNDER_FSDP, decay_groups, decoder_layers, needs_package


class BAdamConfig(FullConfig):
    name: Literal["badam"] = "badam"
    complexity: ClassVar[tuple[float, str]] = (
        11.2,
        "full fine-tuning one decoder layer at a time: a switch interval and order; full checkpoints",
    )
    fixed_optimizer: ClassVar[str | None] = "badam_block_adamw"  # its block optimizer around a torch AdamW
    switch_every: PositiveInt = 50
    """Optimizer steps each block trains before the next one (K)."""
    switch_mode: Literal["ascending", "descending", "random", "fixed"] = "ascending"
    """Block order: from the first layer up, from the last down, a random permutation per pass, or the first only."""

    def check(self, ctx: MethodContext) -> None:
        needs_package(self.name, "badam", "badam")

    def apply(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        layers = decoder_layers(model, self.name)
        # One block trains at a time; which one the optimizer picks when it is built (every layer has one size).
        for param in model.parameters():
            param.requires_grad_(False)
        for param in layers[min(layers)]:
            param.requires_grad_(True)
        return model

    def sharding_refusal(self) -> str | None:
        return OWN_OPTIMIZER_UNDER_FSDP.format(name=self.name, what="BlockOptimizer")

    def multiprocess_refusal(self, strategy: str) -> str | None:
        return (
            f"method {self.name} switches which layers train as it goes, which {strategy} cannot follow (it registers "
            "the trainable parameters once); train in one process (distributed.nproc: 1)"
        )

    def optimizer(
        self, model: torch.nn.Module, learning_rate: float, weight_decay: float, build: OptimizerBuilder | None = None
    ) -> Any:
        needs_package(self.name, "badam", "badam")
        decoder_layers(model, self.name)
        named = list(model.named_parameters())
        base = torch.optim.AdamW(decay_groups(named, weight_decay), lr=learning_rate, weight_decay=weight_decay)
        return block_optimizer(
            base_optimizer=base,
            named_parameters_list=named,
            switch_block_every=self.switch_every,
            switch_mode=self.switch_mode,
            verbose=0,
        )


@contextlib.contextmanager
def _quiet():
    """The package prints each block's parameter names (and the order of a random pass); a float32 model draws a
    warning about mixed precision too."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="BAdam expect model to be loaded in fp16/bf16")
        yield


def block_optimizer(**kwargs: Any) -> Any:
    """badam's BlockOptimizer (an optional package, imported here) without its prints."""
    from badam import BlockOptimizer

    class QuietBlocks(BlockOptimizer):
        def switch_trainable_params(self, verbose: int | None = 0) -> None:
            with _quiet():
                super().switch_trainable_params(verbose=0)

    with _quiet():
        return QuietBlocks(**kwargs)


METHODS.register(
    "badam", BAdamConfig, "BAdam: full fine-tuning one decoder layer at a time, block-coordinate Adam (badam)"
)
