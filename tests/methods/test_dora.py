"""DoRA: m0 = ||W0 + s B A||_c at init (also with PiSSA's init), forward = m * (W0 + s B A) / ||W0 + s B A||_c x."""

from __future__ import annotations

import pytest
import torch
from methodkit import CTX, tiny

from oneml.methods.dora import DoRAConfig
from oneml.methods.targets import adapted_layers


def row_norm(weight: torch.Tensor) -> torch.Tensor:
    """The paper's column norm ||.||_c: one norm per output unit, a row of the (d_out x d_in) weight."""
    return weight.pow(2).sum(dim=1).sqrt()


@pytest.mark.parametrize("init", ["kaiming", "pissa"])
def test_magnitude_at_init_is_the_norm_of_each_output_unit(init):
    original = {n: m.weight.detach().clone() for n, m in tiny().named_modules() if isinstance(m, torch.nn.Linear)}
    model = DoRAConfig(r=4, init=init, target_modules=["q_proj", "down_proj"]).apply(tiny(), CTX)
    for name, layer, a in adapted_layers(model):
        W, A, B = layer.get_base_layer().weight, layer.lora_A[a].weight, layer.lora_B[a].weight
        m = layer.lora_magnitude_vector[a].weight
        assert B.any() == (init == "pissa")  # PiSSA: W is the residual and B A its principal part
        torch.testing.assert_close(m, row_norm(W + layer.scaling[a] * B @ A), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(m, row_norm(original[name]), atol=1e-5, rtol=1e-5)  # i.e. W = W0 at init


def test_forward_is_magnitude_times_the_normalised_direction():
    model = DoRAConfig(r=4, dropout=0.0, target_modules=["v_proj"]).apply(tiny(), CTX)
    _, layer, a = adapted_layers(model)[0]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained state: B != 0 and m away from its init
        layer.lora_B[a].weight.copy_(0.1 * torch.randn(layer.lora_B[a].weight.shape, generator=gen))
        layer.lora_magnitude_vector[a].weight.mul_(1 + 0.2 * torch.rand(layer.out_features, generator=gen))
    W, A, B = layer.get_base_layer().weight, layer.lora_A[a].weight, layer.lora_B[a].weight
    m, s = layer.lora_magnitude_vector[a].weight, layer.scaling[a]
    V = W + s * B @ A  # (d_out, d_in)
    x = torch.randn(2, 7, layer.in_features, generator=gen)
    expected = x @ (m.unsqueeze(1) * V / row_norm(V).unsqueeze(1)).T
    with torch.no_grad():
        torch.testing.assert_close(layer.eval()(x), expected, atol=1e-5, rtol=1e-5)
