"""Per-layer diagnostics: kappa(B A) from the r x r core, DoRA's magnitude and direction drift, what gets logged."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from methodkit import tiny

from oneml import LoRAConfig
from oneml.methods import MethodContext
from oneml.methods.diagnostics import (
    ConditionNumbers,
    DoraDrift,
    condition_number,
    direction_change,
    lora_diagnostics,
    magnitude_change,
)
from oneml.methods.targets import adapted_layers


class Sink:
    def __init__(self):
        self.metrics: list[tuple[dict[str, float], int]] = []
        self.files: dict[str, object] = {}

    def ctx(self, every: int = 10) -> MethodContext:
        return MethodContext(
            diagnostics_every=every,
            log_metrics=lambda m, step: self.metrics.append((m, step)),
            log_json=self.files.__setitem__,
        )


def step(callback, n: int) -> None:
    callback.on_step_end(None, SimpleNamespace(global_step=n), None)


def test_condition_number_from_the_core_matches_the_full_svd():
    gen = torch.Generator().manual_seed(0)
    A, B = torch.randn(4, 96, generator=gen), torch.randn(80, 4, generator=gen)
    sigma = torch.linalg.svdvals(B @ A)  # 80 x 96, rank 4
    assert condition_number(A, B) == pytest.approx((sigma[0] / sigma[3]).item(), rel=1e-4)


def test_condition_number_ignores_zero_singular_values():
    gen = torch.Generator().manual_seed(1)
    A, B = torch.randn(4, 32, generator=gen), torch.randn(24, 4, generator=gen)
    B[:, 3] = 0  # rank 3
    sigma = torch.linalg.svdvals(B @ A)
    assert condition_number(A, B) == pytest.approx((sigma[0] / sigma[2]).item(), rel=1e-4)
    assert condition_number(A, torch.zeros_like(B)) is None  # B A = 0 at a LoRA init


def test_drift_measures_on_fixed_tensors():
    assert magnitude_change(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.0])) == 0
    assert magnitude_change(torch.tensor([3.3, 4.4]), torch.tensor([3.0, 4.0])) == pytest.approx(0.1)
    theta = 0.3
    V0 = torch.eye(2) * 5
    V = torch.tensor([[math.cos(theta), math.sin(theta)], [0.0, 2.0]])  # row 0 turned by theta, row 1 only scaled
    assert direction_change(V, V0) == pytest.approx((1 - math.cos(theta)) / 2, rel=1e-5)


def test_kappa_callback_logs_per_layer_metrics_summaries_and_a_layer_by_step_matrix():
    sink = Sink()
    model = LoRAConfig(r=4, target_modules=["q_proj"]).apply(tiny(), MethodContext())
    (callback,) = lora_diagnostics(model, sink.ctx(every=10))
    assert isinstance(callback, ConditionNumbers)
    step(callback, 5)  # not a diagnostics step
    step(callback, 10)  # B = 0: kappa undefined everywhere
    layers = adapted_layers(model)
    with torch.no_grad():
        for _, layer, a in layers:
            layer.lora_B[a].weight.normal_()
    step(callback, 20)
    callback.on_train_end(None, SimpleNamespace(global_step=23), None)

    assert [s for _, s in sink.metrics] == [10, 20, 23]
    assert sink.metrics[0][0] == {}
    names = [name for name, _, _ in layers]
    expected = {n: condition_number(layer.lora_A[a].weight, layer.lora_B[a].weight) for n, layer, a in layers}
    metrics = sink.metrics[1][0]
    assert {k: v for k, v in metrics.items() if k.startswith("kappa/")} == {f"kappa/{n}": expected[n] for n in names}
    assert metrics["kappa_max"] == max(expected.values())
    assert metrics["kappa_mean"] == pytest.approx(sum(expected.values()) / len(expected))
    payload = sink.files["kappa.json"]
    assert payload["steps"] == [10, 20, 23] and payload["layers"] == names
    assert payload["kappa"] == [[None, expected[n], expected[n]] for n in names]


def test_dora_callback_logs_magnitude_and_direction_drift():
    sink = Sink()
    model = LoRAConfig(r=4, use_dora=True, target_modules=["v_proj"]).apply(tiny(), MethodContext())
    kappa, drift = lora_diagnostics(model, sink.ctx(every=1))
    assert isinstance(kappa, ConditionNumbers) and isinstance(drift, DoraDrift)
    name, layer, a = adapted_layers(model)[0]
    W = layer.get_base_layer().weight.detach()
    with torch.no_grad():
        layer.lora_magnitude_vector[a].weight.mul_(1.25)
        layer.lora_B[a].weight.normal_()
    step(drift, 1)
    V = W + layer.scaling[a] * layer.lora_B[a].weight @ layer.lora_A[a].weight
    cosine = torch.nn.functional.cosine_similarity(V, W, dim=1).mean().item()
    metrics = sink.metrics[-1][0]
    assert metrics[f"dora_magnitude/{name}"] == pytest.approx(0.25, rel=1e-5)
    assert metrics[f"dora_direction/{name}"] == pytest.approx(1 - cosine, rel=1e-4)
    assert set(sink.files["dora.json"]) == {"steps", "layers", "dora_magnitude", "dora_direction"}
