"""DoRA: weight-decomposed low-rank adaptation (Liu et al. 2024, https://arxiv.org/abs/2402.09353).

The weight is split into a trainable magnitude m (one per output unit) and a direction adapted by LoRA:

    W = m * (W0 + s B A) / ||W0 + s B A||_c,    m0 = ||W0||_c  (so W = W0 at init)

||.||_c is the paper's column norm: the norm of each output unit's weights, i.e. a row of peft's (d_out x d_in)
weight. peft computes the norm without gradient (the paper's Section 4.3 saving); the forward value is the
formula above. Combines with every LoRA-family field: ``init: pissa`` gives PiSSA + DoRA (m0 = ||W_res + s B0 A0||
= ||W0||), ``quantize`` a QDoRA-style quantized base. The diagnostics log the magnitude and direction drift.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from oneml.methods import METHODS
from oneml.methods.lora import LoRAConfig


class DoRAConfig(LoRAConfig):
    name: Literal["dora"] = "dora"
    complexity: ClassVar[tuple[float, str]] = (
        4,
        "LoRA plus a learned magnitude vector: slower steps, merge needs care",
    )
    use_dora: Literal[True] = True
    """Always on for this method (use method lora for plain LoRA)."""


METHODS.register("dora", DoRAConfig, "DoRA: LoRA on the direction plus a trainable per-unit magnitude")
