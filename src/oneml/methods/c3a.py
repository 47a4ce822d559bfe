"""C3A: parameter-efficient fine-tuning via circular convolution (Chen et al. 2024, https://arxiv.org/abs/2407.19342).

The update is a block matrix of circulant b x b blocks, each defined by one trained vector and applied as a
circular convolution through the FFT:

    W = W0 + [C(w_jk)],   C(w) the circulant matrix of w (b),  (d_out / b) x (d_in / b) blocks,
    dW x = IFFT(FFT(w) * FFT(x)) per block

so a layer costs d_in d_out / b parameters, and the update can have full rank. b = ``block_size`` must divide every
target's d_in and d_out: oneml's default is 64 (peft's 256 does not divide SmolLM2's 576). peft starts the vectors
Xavier-uniform (the paper's init; ``zero_init`` for W = W0 at the start). No kappa. Trains on a 4-bit base. Mergeable.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class C3AConfig(LayerTuner):
    name: Literal["c3a"] = "c3a"
    complexity: ClassVar[tuple[float, str]] = (4.2, "circulant blocks through FFTs: a block size that divides all")
    peft_type: ClassVar[str] = "C3A"
    renamed: ClassVar[dict[str, str]] = {"zero_init": "init_weights"}
    block_size: PositiveInt = 64
    """b: must divide every target's input and output size; larger b = fewer parameters (d_in d_out / b)."""
    zero_init: bool = False
    """Start the kernels at zero (W = W0) instead of Xavier-uniform."""


METHODS.register("c3a", C3AConfig, "C3A: block-circulant update applied by FFT convolution")
