"""Per-layer diagnostics of LoRA-family adapters, logged during training (a helper, not a method).

- Condition number kappa(B A) = sigma_max / sigma_min over the nonzero singular values of the rank-r update.
  B A is d_out x d_in but has rank <= r; with B = Q_B R_B and A^T = Q_A R_A (thin QR),
  B A = Q_B (R_B R_A^T) Q_A^T, so its singular values are those of the r x r core R_B R_A^T: cheap at any size.
- DoRA (https://arxiv.org/abs/2402.09353): the weight is m * V / ||V||_c with V = W0 + s B A; ||.||_c is the
  paper's column norm, i.e. the norm of each output unit's weights (a row of peft's d_out x d_in weight).
  Magnitude change ||m - m0|| / ||m0||; direction change 1 - mean over output units of cos(V_i, V0_i), where
  V0 = W0 + s B0 A0 (the frozen W0 is still there, so only the small B0, A0 are kept).

Every ``ctx.diagnostics_every`` optimizer steps (and at the last step) each quantity is logged as metrics
``<quantity>/<layer>`` plus ``<quantity>_mean`` and ``<quantity>_max``, and a JSON artifact holds the layer x step
matrix (``kappa.json``, ``dora.json``; null where undefined, e.g. kappa of B A = 0 at a B = 0 init).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback

from oneml.methods import MethodContext
from oneml.methods.targets import adapted_layers


def condition_number(A: torch.Tensor, B: torch.Tensor) -> float | None:
    """kappa(B A) from the r x r core; None when B A = 0 (no nonzero singular value)."""
    A, B = A.detach().float(), B.detach().float()  # A: (r, d_in), B: (d_out, r)
    _, r_b = torch.linalg.qr(B)  # (r, r)
    _, r_a = torch.linalg.qr(A.T)  # (r, r)
    sigma = torch.linalg.svdvals(r_b @ r_a.T)  # descending
    if sigma[0] <= 0:
        return None
    # The same relative cut-off as torch.linalg.matrix_rank on the full d_out x d_in product.
    tol = sigma[0] * max(B.shape[0], A.shape[1]) * torch.finfo(torch.float32).eps
    nonzero = sigma[sigma > tol]
    return (sigma[0] / nonzero[-1]).item()


def magnitude_change(m: torch.Tensor, m0: torch.Tensor) -> float:
    """||m - m0|| / ||m0||."""
    return ((m - m0).norm() / m0.norm()).item()


def direction_change(V: torch.Tensor, V0: torch.Tensor) -> float:
    """1 - mean over output units (rows) of the cosine between V and V0."""
    cosine = torch.nn.functional.cosine_similarity(V.float(), V0.float(), dim=1)
    return (1 - cosine.mean()).item()


class LayerDiagnostics(TrainerCallback):
    """Measures named per-layer quantities every ``ctx.diagnostics_every`` steps; logs metrics and a JSON matrix."""

    artifact = "diagnostics.json"

    def __init__(self, layers: list[tuple[str, Any, str]], ctx: MethodContext):
        self.layers = layers
        self.every = ctx.diagnostics_every
        self.log_metrics, self.log_json = ctx.log_metrics, ctx.log_json
        self.steps: list[int] = []
        self.history: dict[str, dict[str, list[float | None]]] = {}  # quantity -> layer -> values over steps

    def measure(self) -> dict[str, dict[str, float | None]]:
        """quantity -> layer -> value now."""
        raise NotImplementedError

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.record(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if state.global_step and (not self.steps or self.steps[-1] != state.global_step):
            self.record(state.global_step)

    def record(self, step: int) -> None:
        with torch.no_grad():
            values = self.measure()
        self.steps.append(step)
        metrics: dict[str, float] = {}
        for quantity, per_layer in values.items():
            history = self.history.setdefault(quantity, {name: [] for name, _, _ in self.layers})
            for name, value in per_layer.items():
                history[name].append(value)
            defined = [v for v in per_layer.values() if v is not None]
            metrics |= {f"{quantity}/{name}": v for name, v in per_layer.items() if v is not None}
            if defined:
                metrics |= {f"{quantity}_mean": sum(defined) / len(defined), f"{quantity}_max": max(defined)}
        self.log_metrics(metrics, step)
        names = [name for name, _, _ in self.layers]
        payload: dict[str, Any] = {"steps": self.steps, "layers": names}
        payload |= {quantity: [h[name] for name in names] for quantity, h in self.history.items()}
        self.log_json(self.artifact, payload)


class ConditionNumbers(LayerDiagnostics):
    """kappa(B A) per adapted layer."""

    artifact = "kappa.json"

    def measure(self) -> dict[str, dict[str, float | None]]:
        return {"kappa": {name: condition_number(*_factors(layer, a)) for name, layer, a in self.layers}}


class DoraDrift(LayerDiagnostics):
    """DoRA's magnitude and direction change per layer, relative to the start of training."""

    artifact = "dora.json"

    def __init__(self, layers: list[tuple[str, Any, str]], ctx: MethodContext):
        super().__init__(layers, ctx)
        self.start = {
            name: tuple(t.detach().clone() for t in (whole(layer.lora_magnitude_vector[a].weight), *_factors(layer, a)))
            for name, layer, a in layers
        }

    def measure(self) -> dict[str, dict[str, float | None]]:
        from oneml.models.quantization import dequantized_weight

        magnitude: dict[str, float | None] = {}
        direction: dict[str, float | None] = {}
        for name, layer, a in self.layers:
            m0, A0, B0 = self.start[name]
            A, B = _factors(layer, a)
            weight = whole(dequantized_weight(layer.get_base_layer())).float()
            s = layer.scaling[a]
            magnitude[name] = magnitude_change(whole(layer.lora_magnitude_vector[a].weight).float(), m0.float())
            direction[name] = direction_change(weight + s * (B @ A).float(), weight + s * (B0 @ A0).float())
        return {"dora_magnitude": magnitude, "dora_direction": direction}


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a parameter FSDP shards across processes (an all-gather every rank must join: the
    callbacks run on every rank at the same steps); any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def _factors(layer: Any, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
    return whole(layer.lora_A[adapter].weight), whole(layer.lora_B[adapter].weight)


def lora_diagnostics(model: torch.nn.Module, ctx: MethodContext) -> list[TrainerCallback]:
    """The diagnostics callbacks for a LoRA-family model: kappa always, DoRA drift where layers use DoRA."""
    layers = adapted_layers(model)
    dora = [(name, layer, a) for name, layer, a in layers if a in layer.lora_magnitude_vector]
    return [ConditionNumbers(layers, ctx)] + ([DoraDrift(dora, ctx)] if dora else [])
