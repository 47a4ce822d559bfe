"""BOFT: orthogonal fine-tuning by butterfly factorisation (Liu et al. 2023, https://arxiv.org/abs/2311.06243).

OFT's rotation as a product of m sparse butterfly factors, each a permuted block-diagonal orthogonal matrix, so a
dense rotation costs few parameters:

    W = R W0,   R = B_m ... B_1,   B_i = P_i^T diag(R_i1, ..., R_ik) P_i,   R_ij = Cayley(Q_ij), b x b

(m = ``n_butterfly_factor``, b = ``block_size``, which must divide d_in; m = 1 is OFT). Trains on a 4-bit base
(peft rotates the input). Not low-rank: no kappa. Mergeable.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class BOFTConfig(LayerTuner):
    name: Literal["boft"] = "boft"
    complexity: ClassVar[tuple[float, str]] = (4.6, "butterfly orthogonal factors: block size and count must fit")
    peft_type: ClassVar[str] = "BOFT"
    renamed: ClassVar[dict[str, str]] = {
        "block_size": "boft_block_size",
        "n_butterfly_factor": "boft_n_butterfly_factor",
        "dropout": "boft_dropout",
    }
    block_size: PositiveInt = 4
    """b: size of each orthogonal block (must divide every target's input size)."""
    n_butterfly_factor: PositiveInt = 1
    """m: butterfly factors in the product (1 = block-diagonal OFT)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Multiplicative dropout over the blocks."""


METHODS.register("boft", BOFTConfig, "BOFT: OFT's rotation as a product of butterfly factors")
