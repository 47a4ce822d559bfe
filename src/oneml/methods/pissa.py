"""PiSSA: principal singular values and singular vectors adaptation (Meng et al. 2024, https://arxiv.org/abs/2404.02948).

With the SVD W0 = U S V^T, the adapter starts as the top-r part and the rest is frozen:

    A0 = diag(sqrt(S_r / s)) V_r^T,   B0 = U_r diag(sqrt(S_r / s)),   W_res = W0 - s B0 A0,   W = W_res + s B A

so training starts from W0 exactly and moves the principal directions first. ``svd: exact`` takes the full SVD;
``svd: fast`` the randomized one (Halko et al.) with ``niter`` subspace iterations (peft's ``pissa_niter_<n>``),
seconds instead of minutes on 7B models. The residual is exact either way: W_res + s B0 A0 = W0 up to rounding.

On a quantized base (``quantize``) the SVD runs in full precision and the residual is quantized afterwards, as the
paper prescribes; a 4-bit weight is never decomposed. Saving converts the adapter to a plain rank-2r LoRA against
the original base (see lora.py), so ``load(original_base, path)`` gives the trained model's logits.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from oneml.errors import OnemlError
from oneml.methods import METHODS, MethodContext
from oneml.methods.lora import LoRAConfig


class PiSSAConfig(LoRAConfig):
    name: Literal["pissa"] = "pissa"
    complexity: ClassVar[tuple[float, str]] = (
        5,
        "LoRA initialised from an SVD of the weights: init cost, base must be converted to export",
    )
    init: Literal["pissa"] = "pissa"
    """Always pissa for this method (use method lora for other inits)."""
    svd: Literal["exact", "fast"] = "exact"
    """exact: full SVD; fast: randomized SVD with niter subspace iterations (large models)."""
    niter: int = 4
    """Subspace iterations of the fast SVD (more = closer to exact)."""

    def peft_init(self) -> str:
        return "pissa" if self.svd == "exact" else f"pissa_niter_{self.niter}"

    def check(self, ctx: MethodContext) -> None:
        if self.svd == "fast" and self.niter <= 0:
            raise OnemlError(f"method.niter: must be a positive integer with svd: fast, got {self.niter}")
        super().check(ctx)


METHODS.register("pissa", PiSSAConfig, "PiSSA: LoRA initialised from the top-r SVD of W; the residual is frozen")
