"""QLoRA and the quantized base: in-memory quantization round trip, 4-bit layers' math, save/load/merge, PiSSA on it."""

from __future__ import annotations

import pytest
import torch
from methodkit import CTX, logits, tiny

from oneml.methods.lora import LoRAConfig
from oneml.methods.pissa import PiSSAConfig
from oneml.methods.qlora import QLoRAConfig
from oneml.methods.targets import adapted_layers
from oneml.models import describe_model
from oneml.models.quantization import dequantize_model, dequantized_weight, is_quantized, quantize_model


def perturb(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


@pytest.mark.parametrize(
    ("mode", "layer_type", "max_rel_error"), [("nf4", "Linear4bit", 0.15), ("int8", "Linear8bitLt", 0.01)]
)
def test_quantize_round_trip(mode, layer_type, max_rel_error):
    model, original = tiny(), tiny()
    quantize_model(model, mode, skip=("lm_head",))
    assert getattr(model, "is_loaded_in_8bit" if mode == "int8" else "is_loaded_in_4bit")
    assert type(model.lm_head) is torch.nn.Linear  # the head stays in full precision
    assert describe_model(model)["total_params"] == describe_model(original)["total_params"]
    quantized = dict(model.named_modules())
    for name, linear in original.named_modules():
        if type(linear) is torch.nn.Linear and name != "lm_head":
            assert type(quantized[name]).__name__ == layer_type
            W, Wq = linear.weight, dequantized_weight(quantized[name]).float()
            error = ((Wq - W).norm() / W.norm()).item()
            assert 0 < error < max_rel_error, name
    again = quantize_model(tiny(), mode, skip=("lm_head",))  # deterministic: same float weights, same codes
    assert torch.equal(again.model.layers[0].mlp.up_proj.weight.data, model.model.layers[0].mlp.up_proj.weight.data)

    dequantize_model(model)
    assert not any(is_quantized(m) for m in model.modules()) and not getattr(model, "is_loaded_in_4bit", False)
    assert torch.equal(
        model.model.layers[0].mlp.up_proj.weight, dequantized_weight(quantized["model.layers.0.mlp.up_proj"])
    )


def test_float_storage_holds_the_same_4bit_codes_in_a_floating_tensor_that_fsdp_can_shard():
    """QLoRA under FSDP: the packed bytes live in a float32 tensor (FSDP shards floating parameters only) and the
    layer computes exactly as with uint8 storage; the layer keeps the quantization state for FSDP's plain tensor."""
    plain, stored = quantize_model(tiny(), "nf4", skip=("lm_head",)), tiny()
    quantize_model(stored, "nf4", skip=("lm_head",), float_storage=True)
    a, b = plain.model.layers[0].mlp.up_proj, stored.model.layers[0].mlp.up_proj
    assert a.weight.dtype == torch.uint8 and b.weight.dtype == torch.float32 and b.weight.is_floating_point()
    assert torch.equal(a.weight.data.view(-1), b.weight.data.view(torch.uint8).view(-1))  # the same codes
    assert b.quant_state is b.weight.quant_state  # what bitsandbytes restores a converted weight from
    x = torch.randn(2, 3, a.in_features)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    torch.testing.assert_close(dequantized_weight(a), dequantized_weight(b), rtol=0, atol=0)


@pytest.mark.parametrize(("d_in", "d_out"), [(64, 128), (48, 80)])
def test_4bit_layer_is_its_dequantized_weight_in_both_directions_even_after_an_eval_pass(d_in, d_out):
    linear = torch.nn.Linear(d_in, d_out)
    model = torch.nn.Sequential(linear)
    quantize_model(model, "nf4")
    layer = model[0]
    W = dequantized_weight(layer).float()
    x = torch.randn(3, 5, d_in)
    with torch.no_grad():  # an eval pass first: bitsandbytes may repack the weight for inference here
        torch.testing.assert_close(layer.eval()(x), x @ W.T + linear.bias, atol=1e-5, rtol=1e-5)
    x.requires_grad_(True)
    y = layer.train()(x)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, torch.ones_like(y) @ W, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("mode", "merge_tol"), [("nf4", 1e-5), ("int8", 3e-2)])
def test_qlora_save_load_is_exact_and_merge_gives_a_float_model(tmp_path, mode, merge_tol):
    cfg = QLoRAConfig(r=4, dropout=0.0, quantize=mode, target_modules="all-linear")
    model = cfg.apply(tiny(), CTX)
    assert all(is_quantized(layer.get_base_layer()) for _, layer, _ in adapted_layers(model))
    perturb(model)
    cfg.save(model, tmp_path)
    reloaded = cfg.load(tiny(), tmp_path)
    torch.testing.assert_close(logits(reloaded), logits(model), atol=0, rtol=0)

    merged = cfg.merge(reloaded)
    assert not any(is_quantized(m) for m in merged.modules())
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    # int8 also quantizes each matmul's input, which the float merged model does not.
    torch.testing.assert_close(logits(merged), logits(model), atol=merge_tol, rtol=merge_tol)


def test_pissa_on_a_quantized_base_initialises_in_full_precision_then_quantizes_the_residual():
    float_model = PiSSAConfig(r=4).apply(tiny(), CTX)
    quant_model = PiSSAConfig(r=4, quantize="nf4").apply(tiny(), CTX)
    for (name, fl, a), (_, ql, _) in zip(adapted_layers(float_model), adapted_layers(quant_model), strict=True):
        assert torch.equal(fl.lora_A[a].weight, ql.lora_A[a].weight), name  # the SVD of W0, not of Quant(W0)
        assert torch.equal(fl.lora_B[a].weight, ql.lora_B[a].weight), name
        residual = torch.nn.Sequential(torch.nn.Linear(1, 1))
        residual[0] = fl.get_base_layer()
        quantize_model(residual, "nf4")
        assert torch.equal(dequantized_weight(ql.get_base_layer()), dequantized_weight(residual[0])), name


@pytest.mark.parametrize(
    "method", [PiSSAConfig(r=4, quantize="nf4", use_dora=True), LoRAConfig(r=4, init="olora", quantize="nf4")]
)
def test_quantized_mutating_init_reloads_the_trained_model_exactly(tmp_path, method):
    cfg = method.model_copy(update={"dropout": 0.0})
    model = cfg.apply(tiny(), CTX)
    perturb(model)
    cfg.save(model, tmp_path)
    reloaded = cfg.load(tiny(), tmp_path)  # rebuilds Quant(W0 - s B0 A0) from the rank-2r file
    torch.testing.assert_close(logits(reloaded), logits(model), atol=0, rtol=0)
    torch.testing.assert_close(logits(cfg.merge(reloaded)), logits(model), atol=1e-5, rtol=1e-5)


def test_int8_weights_are_quantized_with_their_scales_before_any_forward():
    """bitsandbytes quantizes an 8-bit weight only when it moves from the CPU; quantize_model hands it a CPU copy
    whatever the model's device, so the weight is int8 with its row scales at once (on a GPU it used to stay a
    float tensor until the first forward, and dequantizing it before then failed)."""
    model = quantize_model(tiny(), "int8", skip=("lm_head",))
    layer = model.model.layers[0].self_attn.q_proj
    assert layer.weight.dtype == torch.int8 and layer.weight.SCB is not None and layer.state.SCB is None
    assert torch.isfinite(dequantized_weight(layer)).all()  # no forward yet


def test_a_move_that_does_not_quantize_is_refused_not_trained_in_float(monkeypatch):
    """The guard behind the fix: were bitsandbytes to keep a float weight (a move it does not quantize), the run
    stops at once instead of training an unquantized 'int8' model."""
    import bitsandbytes as bnb

    monkeypatch.setattr(bnb.nn.Int8Params, "to", lambda self, *a, **k: torch.nn.Parameter.to(self, *a, **k))
    with pytest.raises(RuntimeError, match="did not quantize an 8-bit weight"):
        quantize_model(tiny(), "int8", skip=("lm_head",))
