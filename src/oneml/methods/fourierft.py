"""FourierFT: parameter-efficient fine-tuning with the discrete Fourier transform (Gao et al. 2024,
https://arxiv.org/abs/2405.03003).

The update is learned as n spectral coefficients at fixed random frequencies and brought back by the inverse 2-D
DFT:

    W = W0 + alpha Re(IDFT2(F)),   F: (d_out x d_in), zero except n trained entries at seeded random positions

so the parameters are n per layer, independent of the layer's size. peft starts the coefficients from N(0, 1)
(the paper's init; ``zero_init`` starts at W = W0 instead). Not low-rank: no kappa. Trains on a 4-bit base.
Mergeable.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class FourierFTConfig(LayerTuner):
    name: Literal["fourierft"] = "fourierft"
    complexity: ClassVar[tuple[float, str]] = (3.7, "spectral coefficients: n, a large scale alpha and a seed")
    peft_type: ClassVar[str] = "FOURIERFT"
    renamed: ClassVar[dict[str, str]] = {"frequency_seed": "random_loc_seed", "zero_init": "init_weights"}
    n_frequency: PositiveInt = 1000
    """n: trained spectral coefficients per layer (at most d_out x d_in)."""
    scaling: float = Field(default=150.0, gt=0)
    """alpha: scale of the update (the paper uses 300 for LLaMA instruction tuning)."""
    frequency_seed: int = 777
    """Seed of the random frequency positions."""
    zero_init: bool = False
    """Start the coefficients at zero (W = W0) instead of N(0, 1)."""


METHODS.register("fourierft", FourierFTConfig, "FourierFT: n trained spectral coefficients per layer")
