"""bitsandbytes on CUDA: nf4 and int8 bases are really quantized once the method applies (int8 too, though the
model is on the GPU already), DoRA on int8, QLoRA save / load / merge / export, and DPO's quantized reference."""

from __future__ import annotations

import pytest
import torch
from gpukit import BF16, GPU, free_cuda, tiny

from oneml import load_run_config, train
from oneml.config import ModelConfig
from oneml.methods import MethodContext
from oneml.methods.qlora import QLoRAConfig
from oneml.models import load_model_and_tokenizer
from oneml.models.quantization import dequantized_weight, is_quantized

pytestmark = GPU
CUDA_CTX = MethodContext(device="cuda")
IDS = torch.randint(0, 255, (2, 24), generator=torch.Generator().manual_seed(1))


def base(**kwargs):
    return load_model_and_tokenizer(ModelConfig(name="tiny-llama", **kwargs), device="cuda")[0]


@pytest.mark.parametrize("mode, storage", [("nf4", torch.uint8), ("fp4", torch.uint8), ("int8", torch.int8)])
def test_base_is_quantized_on_the_gpu_as_soon_as_the_method_applies(mode, storage):
    model = base()
    weights_before = {n: m.weight.detach().float().clone() for n, m in model.named_modules() if n.endswith("up_proj")}
    peft_model = QLoRAConfig(quantize=mode, target_modules="all-linear").apply(model, CUDA_CTX)
    layers = [m for m in peft_model.modules() if is_quantized(m) and not hasattr(m, "base_layer")]  # not peft's
    assert len(layers) == 7 * model.config.num_hidden_layers  # every linear layer but the head
    for layer in layers:
        assert layer.weight.device.type == "cuda" and layer.weight.dtype == storage
        if mode == "int8":
            assert layer.weight.SCB is not None and layer.weight.SCB.device.type == "cuda"
    for name, before in weights_before.items():  # no forward yet: dequantizing works and is close to the weight
        layer = peft_model.get_submodule(f"base_model.model.{name}").get_base_layer()
        error = (dequantized_weight(layer).float() - before).norm() / before.norm()
        assert 0 < error < {"nf4": 0.2, "fp4": 0.3, "int8": 0.02}[mode], (name, float(error))
    with torch.no_grad():
        assert torch.isfinite(peft_model(IDS.cuda()).logits).all()


def test_dora_on_an_int8_base_trains_on_cuda(tmp_path):
    """Refused on the CPU (a CPU path in peft drops the scales); on CUDA the scales live with the weight."""
    free_cuda()
    cfg = load_run_config(None, tiny(tmp_path, "method.name=qlora", "method.quantize=int8", "method.use_dora=true"))
    result = train(cfg, progress=False)
    assert result.metrics["eval_loss"] < result.metrics["initial_eval_loss"]


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_qlora_round_trips_merges_and_exports_from_a_gpu_run(tmp_path, mode):
    from transformers import AutoModelForCausalLM

    from oneml.eval.trained import load_trained, open_run
    from oneml.export import export_run

    free_cuda()
    extra = ["method.name=qlora", f"method.quantize={mode}", "train.save_adapter=true"]
    cfg = load_run_config(None, tiny(tmp_path, *extra))
    result = train(cfg, progress=False)
    ids = IDS.cuda()
    with torch.no_grad():
        expected = result.model.eval()(ids).logits.float()
        run = open_run(result.run_id, tmp_path)
        reloaded, _ = load_trained(run, device="cuda")
        # the trainer's model runs under accelerate's bf16 autocast, the reloaded one in its own bf16 dtypes
        torch.testing.assert_close(reloaded(ids).logits.float(), expected, **BF16)
        merged = cfg.method.merge(reloaded).eval()
        assert not any(is_quantized(m) for m in merged.modules())
        torch.testing.assert_close(merged(ids).logits.float(), expected, **(BF16 if mode == "nf4" else _INT8))
    out = export_run(result.run_id, tmp_path / "export", root=tmp_path)
    exported = AutoModelForCausalLM.from_pretrained(out.folder).eval()
    with torch.no_grad():
        # exported on the CPU in float32 from a bfloat16 GPU run (the base quantized from float32 weights there,
        # from their bfloat16 rounding here): the same model up to that rounding, a few % of the logits' scale
        gap = (exported(IDS).logits - expected.cpu()).abs().max()
        assert gap <= 0.1 * expected.abs().max().cpu(), float(gap)


_INT8 = dict(rtol=5e-2, atol=5e-2)
"""int8 quantizes each matmul's input too: a merged float model differs by that much (qlora.py's docstring)."""


def test_dpo_copy_reference_is_the_quantized_base_on_cuda(tmp_path):
    free_cuda()
    extra = ["method.name=qlora", "objective.name=dpo", "objective.reference=copy", "data.dataset=dpo-demo"]
    result = train(load_run_config(None, tiny(tmp_path, *extra, "data.max_length=256")), progress=False)
    # the same 4-bit base on both sides: 0 up to bf16 rounding (a bf16 reference against the nf4 policy was ~5e-3)
    assert result.metrics["initial_eval_kl_ref"] == pytest.approx(0.0, abs=1e-3)
