"""SORSA: singular values and orthonormal regularized singular vectors adaptation (Cao 2024, https://arxiv.org/abs/2409.00055).

PiSSA's split with the singular values kept apart, so that A and B can be held orthonormal:

    W = W_res + s B diag(S) A,   A0 = V_r^T (r x d_in),  B0 = U_r (d_out x r),  S0 = S_r / s,
    W_res = W0 - U_r diag(S_r) V_r^T

A, B and S train (S is a parametrization of peft's lora_A: its effective weight is diag(S) A, so merging, saving
and DoRA all see the product). The orthonormal regularizer, summed over adapted layers, is

    reg = lambda * sum (||A A^T - I||_F^2 + ||B^T B - I||_F^2),   grad_A = 4 lambda (A A^T - I) A,
                                                                   grad_B = 4 lambda B (B^T B - I)

How it is applied follows the reference trainer (github.com/Gunale0926/SORSA, sorsalib/src/sorsa/trainer.py):
after gradient clipping and before ``optimizer.step()`` it back-propagates (gamma / lr) * reg into the gradients,
where lr is the *configured* learning rate (``args.learning_rate``), not the scheduled one. We do the same in a
``TrainerCallback.on_pre_optimizer_step`` with the analytic gradient (lambda = 1): p.grad += (gamma / lr) * grad_p.
So the logged gradient norm excludes the regularizer (the Trainer measures it before), and with plain SGD at a
constant lr this is exactly the paper's separate step W <- W - gamma * grad reg; with AdamW, as in the reference,
the regularizer's gradient passes through Adam's normalisation with the task gradient. (The reference's code
averages unsquared Frobenius norms over matrices; we use the squared sum written above, whose gradient is smooth
at the orthonormal point.) gamma defaults to the paper's 4e-4.

Saving converts to a plain rank-2r LoRA against the original base, as for PiSSA (lora.py).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch.nn.utils import parametrize
from transformers import TrainerCallback

from oneml.methods import METHODS, MethodContext
from oneml.methods.pissa import PiSSAConfig
from oneml.methods.targets import adapted_layers


class SORSAConfig(PiSSAConfig):
    name: Literal["sorsa"] = "sorsa"
    complexity: ClassVar[tuple[float, str]] = (
        7,
        "SVD-initialised adapter with an orthogonality regulariser and its weight",
    )
    gamma: float = Field(default=4e-4, ge=0)
    """Orthonormal regularizer step: (gamma / lr) * grad reg is added to A's and B's gradients (0 = off)."""

    def prepare(self, model: torch.nn.Module) -> None:
        split_singular_values(model)

    def callbacks(self, model: torch.nn.Module, ctx: MethodContext) -> list[Any]:
        return super().callbacks(model, ctx) + [OrthonormalStep(singular_vectors(model), self.gamma, ctx)]

    def frozen_copy_refusal(self) -> str | None:
        return "keeps its singular values in a parametrization of lora_A, which TRL's copy by parameter name misses"


class RowScale(torch.nn.Module):
    """Parametrization A -> diag(S) A: SORSA's trainable singular values in front of peft's lora_A."""

    def __init__(self, s: torch.Tensor):
        super().__init__()
        self.s = torch.nn.Parameter(s)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.s.unsqueeze(1) * a  # (r, d_in)


def split_singular_values(model: torch.nn.Module) -> None:
    """Turn PiSSA's A = diag(sqrt(S)) V^T, B = U diag(sqrt(S)) into orthonormal A, B and a trainable S."""
    with torch.no_grad():
        for _, layer, a in adapted_layers(model):
            lin_a, lin_b = layer.lora_A[a], layer.lora_B[a]
            norm_a, norm_b = lin_a.weight.norm(dim=1), lin_b.weight.norm(dim=0)  # (r,), (r,)
            # A zero singular value leaves a zero row/column; dividing by 1 keeps it zero instead of NaN.
            lin_a.weight.div_(torch.where(norm_a > 0, norm_a, 1).unsqueeze(1))
            lin_b.weight.div_(torch.where(norm_b > 0, norm_b, 1).unsqueeze(0))
            parametrize.register_parametrization(lin_a, "weight", RowScale(norm_a * norm_b))


def singular_vectors(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(A, B) per adapted layer: the orthonormal factors the regularizer acts on (A without S)."""
    pairs = []
    for _, layer, a in adapted_layers(model):
        lin_a = layer.lora_A[a]
        weight_a = lin_a.parametrizations.weight.original if parametrize.is_parametrized(lin_a) else lin_a.weight
        pairs.append((weight_a, layer.lora_B[a].weight))
    return pairs


def orthonormal_regularizer(pairs: list[tuple[torch.Tensor, torch.Tensor]], weight: float = 1.0) -> torch.Tensor:
    """lambda * sum (||A A^T - I||_F^2 + ||B^T B - I||_F^2) over (A, B) pairs; A: (r, d_in), B: (d_out, r)."""
    terms = []
    for A, B in pairs:
        eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        terms.append(((A @ A.T - eye) ** 2).sum() + ((B.T @ B - eye) ** 2).sum())
    return weight * torch.stack(terms).sum() if terms else torch.zeros(())


def orthonormal_gradients(A: torch.Tensor, B: torch.Tensor, weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The regularizer's gradient, analytically: (4 lambda (A A^T - I) A, 4 lambda B (B^T B - I))."""
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    return 4 * weight * (A @ A.T - eye) @ A, 4 * weight * B @ (B.T @ B - eye)


class OrthonormalStep(TrainerCallback):
    """Adds (gamma / lr) * grad reg to A's and B's gradients after clipping, before the optimizer step."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], gamma: float, ctx: MethodContext):
        self.pairs, self.gamma = pairs, gamma
        self.every, self.log_metrics = ctx.diagnostics_every, ctx.log_metrics

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.gamma == 0:
            return
        scale = self.gamma / args.learning_rate
        with torch.no_grad():
            for A, B in self.pairs:
                for param, grad in zip((A, B), orthonormal_gradients(A, B), strict=True):
                    if param.grad is None:
                        param.grad = torch.zeros_like(param)
                    param.grad.add_(grad, alpha=scale)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            with torch.no_grad():
                value = orthonormal_regularizer(self.pairs).item()
            self.log_metrics({"sorsa_reg": value}, state.global_step)


METHODS.register("sorsa", SORSAConfig, "SORSA: PiSSA with trainable singular values and orthonormal-regularized A, B")
