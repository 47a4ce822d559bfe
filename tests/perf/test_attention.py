"""model.attn_implementation: each implementation keeps packed rows exact (the padded batch's loss and gradients,
at batch size > 1), an implementation that cannot train here is refused in one line, and the run records it.

Masked implementations (eager, sdpa; flex's forward on CPU, its backward on a GPU) rely on transformers' block
mask from the restarting position ids. Varlen kernels (flash) rely on the cumulative lengths the collator adds:
tests/perf/test_packing_varlen.py holds them on CPU against a flash-semantics stand-in; here the real kernels on a
GPU, through our chunked head.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from oneml import load_run_config, train
from oneml.config import ModelConfig
from oneml.data.packing import REAL_TOKENS, PackedCollator, takes_varlen
from oneml.errors import OnemlError
from oneml.models import attention, load_model_and_tokenizer
from oneml.models.lm_head import install_chunked_head
from oneml.tracking import list_runs, resolve_tracking_uri

TOL = dict(rtol=1e-5, atol=1e-6)


def examples(n=6, seed=0):
    """SFT examples of different lengths, prompts masked: several packed rows, some with two or three examples."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for length, prompt in ((11, 4), (5, 2), (6, 3), (3, 1), (9, 2), (4, 2))[:n]:
        ids = torch.randint(3, 250, (length,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def lora(name="tiny-llama", dtype="float32", device="cpu"):
    torch.manual_seed(0)
    base = load_model_and_tokenizer(ModelConfig(name=name, dtype=dtype), device=device)[0]
    return get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).train()


def loss_and_grads(model, batch):
    out = model(**batch, use_cache=False, fused_lm_head=True)
    if not torch.is_grad_enabled():
        return out.loss, ()
    return out.loss, torch.autograd.grad(out.loss, [p for p in model.parameters() if p.requires_grad])


def padded_vs_packed(model, impl, device="cpu"):
    """(padded loss, grads) under sdpa and (packed loss, grads) under ``impl``, the same examples; the packed batch
    is what the collator builds for ``impl`` (with cumulative lengths for a flash kernel)."""
    model = copy.deepcopy(model)
    install_chunked_head(model)
    inner = model.base_model.model
    move = lambda b: {k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}  # noqa: E731
    inner.set_attn_implementation("sdpa")
    want = loss_and_grads(model, move(DataCollatorForLanguageModeling(pad_token_id=0)(examples())))
    inner.set_attn_implementation(impl)
    packed = PackedCollator(pad_token_id=0, varlen=takes_varlen(inner))(examples())
    packed.pop(REAL_TOKENS)
    assert packed["input_ids"].shape[0] > 1  # several rows: the case flash's position-id path gets wrong
    return want, loss_and_grads(model, move(packed))


def assert_same(want, got, **tol):
    torch.testing.assert_close(got[0], want[0], **tol)
    for a, b in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, b, **tol)


@pytest.fixture(scope="module")
def model():
    return lora()


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_masked_attention_keeps_packed_rows_exact_at_batch_above_one(model, impl):
    assert_same(*padded_vs_packed(model, impl), **TOL)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("flash_attention_2", "needs a CUDA device"),
        ("flash_attention_3", "needs a CUDA device"),
        ("flex_attention", "has no backward pass on CPU"),
        ("kernels-community/flash-attn3", "needs a CUDA device"),
    ],
)
def test_an_implementation_that_cannot_train_here_is_refused_in_one_line(tmp_path, name, reason):
    if torch.cuda.is_available():
        pytest.skip("CPU refusals")
    cfg = load_run_config(
        None, ["model.name=tiny-llama", f"model.attn_implementation={name}", f"tracking.root={tmp_path}"]
    )
    with pytest.raises(OnemlError) as err:
        train(cfg, progress=False)
    assert str(err.value).startswith(f"model.attn_implementation: {name} {reason}")
    assert "\n" not in str(err.value) and list_runs(resolve_tracking_uri(None, tmp_path)) == []  # nothing recorded


def test_a_run_records_the_attention_it_used(tmp_path):
    overrides = ["model.name=tiny-llama", "data.max_samples=16", "data.eval_size=4", "data.max_length=96"]
    overrides += [
        "train.max_steps=1",
        "train.eval_before=false",
        "train.save_adapter=false",
        f"tracking.root={tmp_path}",
    ]
    result = train(load_run_config(None, [*overrides, "model.attn_implementation=eager"]), progress=False)
    (run,) = list_runs(resolve_tracking_uri(None, tmp_path))
    assert run["tags"]["oneml.switch.attn_implementation"] == "eager" and run["tags"]["oneml.switch.packing"] == "true"
    assert attention.in_use(result.model) == "eager"


@pytest.mark.slow  # flex compiles its kernel: ~25 s on the shared 2-core machine
def test_flex_attention_forward_keeps_packed_rows_exact_on_cpu(model):
    """FlexAttention has a forward only on CPU (torch 2.13): the loss, with the block mask from the position ids."""
    with torch.no_grad():
        want, got = padded_vs_packed(model, "flex_attention")
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)


# --- on a GPU -----------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["sdpa", "flex_attention", "flash_attention_2", "flash_attention_3"])
def test_each_attention_keeps_packed_rows_exact_on_cuda(name):
    """bf16, batch > 1: packed rows under ``name`` against padded rows under sdpa (loss and LoRA gradients within
    bf16 rounding); an implementation this machine lacks is skipped with the reason."""
    reason = attention.unavailable(name, "cuda", torch.bfloat16)
    if reason is not None:
        pytest.skip(f"{name} {reason}")
    model = lora(dtype="bfloat16", device="cuda")
    want, got = padded_vs_packed(model, name, device="cuda")
    assert_same(want, got, rtol=2e-2, atol=2e-3)


def test_auto_leaves_transformers_choice():
    model = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))[0]
    attention.apply(model, "auto", "cpu")
    assert attention.in_use(model) == "sdpa" and attention.entry("auto") is None
    assert attention.entry("kernels-community/flash-attn3") is attention.HUB
