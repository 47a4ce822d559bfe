"""HRA: Householder reflection adaptation (Yuan et al. 2024, https://arxiv.org/abs/2405.17484).

A chain of r learned Householder reflections multiplies the weight; it is an orthogonal adaptation whose
parameters, r vectors u_i (d_in), also read as a low-rank one:

    W = W0 H_1 ... H_r,   H_i = I - 2 u_i u_i^T / ||u_i||^2      (pairs of equal u_i at init: W = W0)

``apply_gs`` orthogonalises the u_i (Gram-Schmidt) so the chain is one reflection block. peft multiplies the base
weight itself, which a 4-bit layer packs: refused on a quantized base. Not low-rank in A, B form: no kappa. Mergeable.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class HRAConfig(LayerTuner):
    name: Literal["hra"] = "hra"
    complexity: ClassVar[tuple[float, str]] = (4.8, "a chain of r reflections applied in sequence: r, Gram-Schmidt")
    peft_type: ClassVar[str] = "HRA"
    renamed: ClassVar[dict[str, str]] = {"apply_gs": "apply_GS"}
    quantize_refusal: ClassVar[str | None] = "computes on the base weight itself, which a 4-bit layer does not hold"
    r: PositiveInt = 8
    """Number of Householder reflections (even, for the identity init)."""
    apply_gs: bool = False
    """Orthogonalise the reflection vectors (Gram-Schmidt)."""


METHODS.register("hra", HRAConfig, "HRA: a chain of learned Householder reflections of each weight")
