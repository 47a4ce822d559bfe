"""LoRA family core: the seed API, the init choices, the checks, the rank-2r save of mutating inits."""

from __future__ import annotations

import json
import math

import pytest
import torch
from methodkit import CTX, logits, tiny
from safetensors.torch import load_file

from oneml import LoRAConfig, OnemlError, load_run_config
from oneml.methods import MethodContext
from oneml.methods.targets import adapted_layers


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Stand in for training: move every trainable weight."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def test_seed_api_still_works():
    cfg = LoRAConfig(r=16, alpha=32, dropout=0.1, target_modules=["q_proj", "v_proj"])
    assert (cfg.init, cfg.quantize, cfg.use_dora, cfg.loraplus_ratio) == ("kaiming", "none", False, None)
    peft = cfg.peft_config()
    assert (peft.r, peft.lora_alpha, peft.lora_dropout, peft.init_lora_weights) == (16, 32, 0.1, True)
    assert cfg.scaling == 2.0 and LoRAConfig(r=16, alpha=32, rslora=True).scaling == 8.0


@pytest.mark.parametrize("init", ["kaiming", "gaussian"])
def test_zero_update_inits_start_from_the_base(init):
    base = tiny()
    expected = logits(base)
    model = LoRAConfig(r=8, init=init, dropout=0.0).apply(base, CTX)
    for _, layer, a in adapted_layers(model):
        assert not layer.lora_B[a].weight.any()
    torch.testing.assert_close(logits(model), expected, atol=0, rtol=0)
    if init == "gaussian":  # peft's gaussian: A ~ N(0, 1/r)
        A = torch.cat([layer.lora_A[a].weight.flatten() for _, layer, a in adapted_layers(model)])
        assert abs(A.std().item() - 1 / 8) < 0.01


def test_olora_init_is_the_qr_of_w_and_the_residual_is_frozen():
    cfg = LoRAConfig(r=4, alpha=8, init="olora", target_modules=["q_proj"])
    original = tiny().model.layers[0].self_attn.q_proj.weight.detach().clone()
    model = cfg.apply(tiny(), CTX)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    A, B, W_res = layer.lora_A["default"].weight, layer.lora_B["default"].weight, layer.base_layer.weight
    Q, R = torch.linalg.qr(original)
    torch.testing.assert_close(B, Q[:, :4])
    torch.testing.assert_close(A, R[:4])
    torch.testing.assert_close(W_res + cfg.scaling * B @ A, original, atol=1e-6, rtol=0)
    assert not W_res.requires_grad


@pytest.mark.parametrize(
    ("overrides", "device", "field"),
    [
        (["method.compute_dtype=bfloat16"], "cpu", "method.compute_dtype"),
        (["method.double_quant=false"], "cpu", "method.double_quant"),
        (["method.quantize=int8", "method.compute_dtype=float16"], "cpu", "method.compute_dtype"),
        (["method.quantize=int8", "method.use_dora=true"], "cpu", "method.use_dora"),
        (["method.quantize=nf4"], "mps", "method.quantize"),
        (["method.name=pissa", "method.svd=fast", "method.niter=0"], "cpu", "method.niter"),
        (["method.name=qlora", "method.use_dora=true", "method.quantize=int8"], "cpu", "method.use_dora"),
    ],
)
def test_check_refuses_impossible_combinations(overrides, device, field):
    method = load_run_config(None, overrides).method
    with pytest.raises(OnemlError) as err:
        method.check(MethodContext(device=device))
    assert str(err.value).startswith(f"{field}:") and "\n" not in str(err.value)


def test_check_accepts_the_defaults_and_a_full_combination():
    for overrides in ([], ["method.name=sorsa", "method.quantize=nf4", "method.use_dora=true", "method.svd=fast"]):
        load_run_config(None, overrides).method.check(CTX)


@pytest.mark.parametrize("rslora", [False, True])
def test_mutating_init_saves_a_plain_rank_2r_lora_against_the_original_base(tmp_path, rslora):
    cfg = LoRAConfig(r=4, alpha=8, init="olora", rslora=rslora, dropout=0.0)
    model = cfg.apply(tiny(), CTX)
    initial = {
        name: (layer.lora_A[a].weight.clone(), layer.lora_B[a].weight.clone())
        for name, layer, a in adapted_layers(model)
    }
    perturb(model)
    cfg.save(model, tmp_path)

    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["r"] == 8 and saved["init_lora_weights"] is True
    assert saved["lora_alpha"] == pytest.approx(8 * (math.sqrt(2) if rslora else 2))
    state = load_file(tmp_path / "adapter_model.safetensors")
    for name, layer, a in adapted_layers(model):
        A0, B0 = initial[name]
        A2, B2 = state[f"base_model.model.{name}.lora_A.weight"], state[f"base_model.model.{name}.lora_B.weight"]
        assert torch.equal(A2, torch.cat([layer.lora_A[a].weight, A0])) and torch.equal(B2[:, 4:], -B0)

    reloaded = cfg.load(tiny(), tmp_path)  # the original base, not the residual
    torch.testing.assert_close(logits(reloaded), logits(model), atol=1e-5, rtol=1e-5)
