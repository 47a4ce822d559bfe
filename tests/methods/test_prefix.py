"""Prefix tuning: the parameter count is the prefix itself, an activations-initialised prefix reads exactly like real
tokens before the input, the fused LM head scores the same label positions, and checkpointing is refused up front."""

from __future__ import annotations

import pytest
import torch
from trl.trainer.utils import add_fused_lm_head

from oneml import OnemlError, load_run_config, train
from oneml.config import ModelConfig
from oneml.methods import MethodContext
from oneml.methods.prefix import PrefixConfig
from oneml.models import load_model_and_tokenizer

M = 5  # virtual tokens
L, KV_DIM, HIDDEN = 2, 2 * 16, 64  # tiny-llama: 2 layers, 2 kv heads x head dim 16 (GQA), hidden 64


def tiny_model():
    model, _ = load_model_and_tokenizer(ModelConfig(name="tiny-llama"), device="cpu", seed=0)
    return model


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_gradient_checkpointing_is_refused_before_anything_is_recorded(tmp_path):
    with pytest.raises(OnemlError) as err:
        PrefixConfig().check(MethodContext(gradient_checkpointing=True))
    assert str(err.value) == (
        "method prefix: gradient checkpointing is not supported with prefix tuning (peft's past_key_values prefix "
        "breaks recomputation); set train.gradient_checkpointing: false"
    )
    cfg = load_run_config(
        None,
        [
            "model.name=tiny-llama",
            "method.name=prefix",
            "train.gradient_checkpointing=true",
            f"tracking.root={tmp_path}",
        ],
    )
    with pytest.raises(OnemlError, match="gradient checkpointing"):
        train(cfg, progress=False)
    assert not any((tmp_path / "runs").iterdir())


def test_trainable_parameters_are_the_prefix_itself():
    model = PrefixConfig(num_virtual_tokens=M).apply(tiny_model(), MethodContext())
    assert trainable(model) == M * L * 2 * KV_DIM


def test_projection_parameters_are_table_plus_mlp():
    h = 24
    model = PrefixConfig(num_virtual_tokens=M, projection=True, projection_hidden=h).apply(
        tiny_model(), MethodContext()
    )
    # table (m x d_kv) -> Linear(d_kv, h) -> tanh -> Linear(h, L * 2 * d_kv)
    assert trainable(model) == M * KV_DIM + (KV_DIM * h + h) + (h * L * 2 * KV_DIM + L * 2 * KV_DIM)


def test_activation_init_reads_like_real_tokens_before_the_input():
    base = tiny_model()
    model = PrefixConfig(num_virtual_tokens=M).apply(base, MethodContext(seed=3))
    prefix_ids = torch.randint(0, base.config.vocab_size, (1, M), generator=torch.Generator().manual_seed(3))
    ids = torch.randint(0, 200, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        with model.disable_adapter():
            reference = base(input_ids=torch.cat([prefix_ids.expand(2, -1), ids], dim=1)).logits[:, M:]
    torch.testing.assert_close(adapted, reference, atol=1e-5, rtol=1e-5)


def test_activation_init_needs_a_direct_prefix():
    with pytest.raises(OnemlError, match="method.init: 'activations'"):
        load_run_config(None, ["method.name=prefix", "method.projection=true", "method.init=activations"])


@pytest.mark.parametrize("projection", [False, True])
def test_fused_head_scores_the_callers_label_positions(projection):
    model = PrefixConfig(num_virtual_tokens=M, projection=projection).apply(tiny_model(), MethodContext())
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "is_top1"))
    ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :4] = -100
    labels[1, -2:] = -100
    mask = torch.ones_like(ids)
    with torch.no_grad():
        fused = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        logits = model(input_ids=ids, attention_mask=mask).logits
    # Virtual tokens add no label positions: exactly the caller's labels are counted.
    assert fused.label_mask.shape == (2, 11)
    assert int(fused.label_mask.sum()) == int((labels[:, 1:] != -100).sum())
    log_probs = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(fused.log_probs, log_probs * fused.label_mask, atol=1e-5, rtol=1e-5)


def greedy(model, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding through ``forward`` alone (no cache): what ``generate`` must reproduce."""
    out = prompt
    for _ in range(steps):
        nxt = model(input_ids=out, attention_mask=torch.ones_like(out)).logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], dim=1)
    return out


def test_generate_uses_the_prefix_after_apply_and_after_load(tmp_path):
    cfg = PrefixConfig(num_virtual_tokens=M)
    model = cfg.apply(tiny_model(), MethodContext(seed=3))
    prompt = torch.randint(0, 200, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = greedy(model, prompt, 8)
        with model.disable_adapter():
            assert not torch.equal(greedy(model, prompt, 8), expected)  # the prefix changes the continuation
        generated = model.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False
        )
        assert torch.equal(generated, expected)
        model.save_pretrained(tmp_path)
        reloaded = cfg.load(tiny_model(), tmp_path)
        regenerated = reloaded.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False
        )
        assert torch.equal(regenerated, expected)
