"""OFT: orthogonal fine-tuning (Qiu et al. 2023, https://arxiv.org/abs/2306.07280; peft's OFTv2 form,
https://arxiv.org/abs/2506.19847).

A learned block-diagonal orthogonal matrix rotates the layer's input; the weight's norms and pairwise angles
(hyperspherical energy) stay as pretrained:

    W = W0 R,   R = diag(R_1, ..., R_k),  R_i = (I + Q_i)(I - Q_i)^-1  (Cayley; Q_i skew-symmetric, b x b, Q = 0 at
    init)

peft 0.21 rotates the input (input-centric OFTv2) and approximates the inverse by a Neumann series, so a 4-bit base
works (the base layer runs as is). b = ``block_size`` must divide d_in. Not low-rank: no kappa. Mergeable.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class OFTConfig(LayerTuner):
    name: Literal["oft"] = "oft"
    complexity: ClassVar[tuple[float, str]] = (4.4, "orthogonal blocks: a block size that must divide every layer")
    peft_type: ClassVar[str] = "OFT"
    renamed: ClassVar[dict[str, str]] = {"block_size": "oft_block_size", "dropout": "module_dropout"}
    block_size: PositiveInt = 32
    """b: size of each orthogonal block (must divide every target's input size); parameters ~ d_in (b - 1) / 2."""
    coft: bool = False
    """Constrained OFT: keep R within eps of the identity."""
    eps: float = Field(default=6e-5, gt=0)
    """COFT's radius."""
    block_share: bool = False
    """One block shared by the whole diagonal (b (b - 1) / 2 parameters per layer)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Multiplicative dropout over the blocks (peft's module_dropout)."""


METHODS.register("oft", OFTConfig, "OFT: a block-diagonal orthogonal rotation of each layer's input")
