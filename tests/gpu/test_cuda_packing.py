"""Packing on CUDA: packed == padded loss and gradients with the GPU's attention kernels (sdpa; flash-attention 2
where the image has it, through the cumulative lengths), and the probe at batch > 1 on a bfloat16 model."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from gpukit import BF16, FP32, GPU
from peft import LoraConfig, get_peft_model
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from oneml.config import ModelConfig
from oneml.data.packing import REAL_TOKENS, PackedCollator, packing_problem, takes_varlen
from oneml.models import load_model_and_tokenizer

pytestmark = GPU
FLASH = importlib.util.find_spec("flash_attn") is not None


def examples():
    gen = torch.Generator().manual_seed(0)
    out = []
    for length, prompt in ((40, 9), (17, 4), (23, 6), (31, 5), (9, 2)):
        ids = torch.randint(3, 250, (length,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def lora_model(dtype: torch.dtype, attention: str):
    torch.manual_seed(0)
    config = ModelConfig(name="tiny-llama", dtype=str(dtype).removeprefix("torch."))
    base = load_model_and_tokenizer(config, device="cuda")[0]
    base.set_attn_implementation(attention)  # on the GPU already: flash-attention checks where the weights are
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    return model.train()


def loss_and_grads(model, batch):
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items() if k != REAL_TOKENS}
    out = model(**batch, use_cache=False)
    params = [p for p in model.parameters() if p.requires_grad]
    return out.loss.float(), [g.float() for g in torch.autograd.grad(out.loss, params)]


BF16_GRADS = dict(rtol=0.0, atol=5e-2)
"""bfloat16 gradients of one loss summed in another order (packed rows vs padded), each tensor divided by its
largest entry: a few % of it (2.4% seen on the CPU)."""
FP32_GRADS = dict(rtol=0.0, atol=1e-3)
CASES = [
    pytest.param(torch.float32, "sdpa", FP32, FP32_GRADS, id="sdpa-fp32"),
    pytest.param(torch.bfloat16, "sdpa", BF16, BF16_GRADS, id="sdpa-bf16"),
    pytest.param(
        torch.bfloat16, "flash_attention_2", BF16, BF16_GRADS, id="flash2-bf16",
        marks=pytest.mark.skipif(not FLASH, reason="flash-attn is not installed on this image"),
    ),
]  # fmt: skip


@pytest.mark.parametrize("dtype, attention, tol, grad_tol", CASES)
def test_packed_batch_has_the_padded_loss_and_gradients_on_cuda(dtype, attention, tol, grad_tol):
    model = lora_model(dtype, attention)
    assert packing_problem(model) is None  # the probe (batch > 1, the collator's layout) passes on this kernel
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(examples())
    packed = PackedCollator(pad_token_id=0, varlen=takes_varlen(model))(examples())
    assert packed["input_ids"].shape[0] > 1  # several packed rows
    loss_padded, grads_padded = loss_and_grads(copy.deepcopy(model), padded)
    loss_packed, grads_packed = loss_and_grads(model, packed)
    torch.testing.assert_close(loss_packed, loss_padded, **tol)
    for got, want in zip(grads_packed, grads_padded, strict=True):
        scale = want.abs().max().clamp(min=1e-6)  # each gradient tensor by its own scale
        torch.testing.assert_close(got / scale, want / scale, **grad_tol)


@pytest.mark.skipif(not FLASH, reason="flash-attn is not installed on this image")
def test_flash_attention_without_cumulative_lengths_is_caught_by_the_probe(monkeypatch):
    from oneml.data import packing

    model = lora_model(torch.bfloat16, "flash_attention_2")
    monkeypatch.setattr(packing, "varlen_kwargs", lambda lengths, width: {})
    assert "mixes packed examples" in (packing_problem(model) or "")
