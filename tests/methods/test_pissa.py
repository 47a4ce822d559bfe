"""PiSSA: the residual + s B A reconstructs W, B A is the top-r SVD, fast SVD, save as rank-2r LoRA on the original."""

from __future__ import annotations

import json

import pytest
import torch
from methodkit import CTX, logits, tiny

from oneml.methods.pissa import PiSSAConfig
from oneml.methods.targets import adapted_layers


def originals() -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in tiny().named_modules() if isinstance(m, torch.nn.Linear)}


def test_exact_svd_init_is_the_top_r_svd_and_the_residual_reconstructs_w():
    cfg = PiSSAConfig(r=4, alpha=8, target_modules="all-linear")
    assert cfg.peft_init() == "pissa"
    W0 = originals()
    model = cfg.apply(tiny(), CTX)
    for name, layer, a in adapted_layers(model):
        A, B, W_res = layer.lora_A[a].weight, layer.lora_B[a].weight, layer.get_base_layer().weight
        s = cfg.scaling
        torch.testing.assert_close(W_res + s * B @ A, W0[name], atol=2e-6, rtol=0)
        U, S, Vh = torch.linalg.svd(W0[name], full_matrices=False)
        torch.testing.assert_close(s * B @ A, U[:, :4] @ torch.diag(S[:4]) @ Vh[:4], atol=2e-5, rtol=0)
        torch.testing.assert_close(A @ A.T, torch.diag(S[:4] / s), atol=2e-5, rtol=1e-5)  # A = sqrt(S/s) V^T
        torch.testing.assert_close(B.T @ B, torch.diag(S[:4] / s), atol=2e-5, rtol=1e-5)  # B = U sqrt(S/s)
        assert A.requires_grad and B.requires_grad and not W_res.requires_grad


def test_fast_svd_init_reconstructs_w_exactly_and_nearly_optimally():
    cfg = PiSSAConfig(r=4, svd="fast", niter=4, target_modules=["q_proj", "up_proj"])
    assert cfg.peft_init() == "pissa_niter_4"
    W0 = originals()
    torch.manual_seed(0)
    model = cfg.apply(tiny(), CTX)
    for name, layer, a in adapted_layers(model):
        BA = cfg.scaling * layer.lora_B[a].weight @ layer.lora_A[a].weight
        torch.testing.assert_close(layer.get_base_layer().weight + BA, W0[name], atol=2e-6, rtol=0)
        S = torch.linalg.svdvals(W0[name])
        best = S[4:].norm()  # error of the best rank-4 approximation (Eckart-Young)
        assert (W0[name] - BA).norm() <= 1.05 * best, name


@pytest.mark.parametrize("use_dora", [False, True])
def test_save_is_a_rank_2r_lora_that_reproduces_the_trained_model_on_the_original_base(tmp_path, use_dora):
    cfg = PiSSAConfig(r=4, dropout=0.0, use_dora=use_dora)
    model = cfg.apply(tiny(), CTX)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # stand in for training
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    cfg.save(model, tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (saved["r"], saved["lora_alpha"], saved["init_lora_weights"], saved["use_dora"]) == (8, 64, True, use_dora)

    reloaded = cfg.load(tiny(), tmp_path)
    expected = logits(model)
    torch.testing.assert_close(logits(reloaded), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(cfg.merge(reloaded)), expected, atol=1e-5, rtol=1e-5)
