"""Lean activations: bitwise the losses, gradients and random draws of the plain step, with less stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model

from oneml import load_run_config
from oneml.models import build_random_model, byte_tokenizer, lean

ARCH = {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4}


def _model(targets=("q_proj", "k_proj", "v_proj", "o_proj"), dropout=0.1, *, lean_on: bool):
    base = build_random_model(_preset(), byte_tokenizer(), ARCH, seed=0)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=list(targets), init_lora_weights=False)
    torch.manual_seed(0)  # the adapters' random init (init_lora_weights=False: B nonzero, so dropout shows)
    model = get_peft_model(base, cfg).train()
    swapped = lean.install(model) if lean_on else 0
    return model, swapped


def _preset():
    from oneml.models import MODELS

    return MODELS.get("tiny-llama")


def _step(model, seed: int = 1):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 200, (3, 24), generator=gen)
    torch.manual_seed(seed)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, torch.get_rng_state()


@pytest.mark.parametrize(
    "targets",
    [("q_proj", "k_proj", "v_proj", "o_proj"), ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj")],
)
def test_loss_gradients_and_draws_are_bitwise_the_plain_ones(targets):
    plain, _ = _model(targets, lean_on=False)
    leaner, swapped = _model(targets, lean_on=True)
    assert swapped == 2 * len(targets) + 2  # every LoRA dropout of both layers, and both MLP activations
    loss, grads, rng = _step(plain)
    loss_lean, grads_lean, rng_lean = _step(leaner)
    assert torch.equal(loss, loss_lean)
    assert grads.keys() == grads_lean.keys() and all(torch.equal(grads[k], grads_lean[k]) for k in grads)
    assert torch.equal(rng, rng_lean)  # the same dropout draws, so every later step draws the same too


def test_eval_and_no_grad_forwards_store_nothing_and_change_nothing():
    plain, _ = _model(lean_on=False)
    leaner, _ = _model(lean_on=True)
    ids = torch.arange(40).view(2, 20)
    with torch.no_grad():
        assert torch.equal(plain.eval()(input_ids=ids).logits, leaner.eval()(input_ids=ids).logits)
    recipes = next(m.recipes for m in leaner.modules() if isinstance(m, lean.LeanDropout))
    assert not recipes.active and not recipes._by_address  # nothing registered outside a training forward


def test_an_input_changed_in_place_before_the_backward_is_an_error_not_a_wrong_gradient():
    model, _ = _model(lean_on=True)
    kept = []
    norm = model.base_model.model.model.layers[0].input_layernorm
    norm.register_forward_hook(lambda module, args, out: kept.append(out))  # x, which q/k/v's dropout rebuild from
    loss = model(input_ids=torch.arange(30).view(2, 15), labels=torch.arange(30).view(2, 15)).loss
    kept[0].add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_nothing_to_swap_installs_nothing():
    base = build_random_model(_preset(), byte_tokenizer(), {**ARCH, "hidden_act": "relu"}, seed=0)
    model = get_peft_model(base, LoraConfig(r=4, lora_dropout=0.0, target_modules=["q_proj"]))
    assert lean.install(model) == 0
    assert not model._forward_pre_hooks and not model._forward_hooks


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ([], ""),
        (["train.lean_activations=false"], "train.lean_activations is false"),
        (["train.gradient_checkpointing=true"], "gradient checkpointing stores no activations inside its layers"),
        (["train.compile=true"], "torch.compile does not trace saved-tensor hooks"),
    ],
)
def test_the_switch_is_recorded_with_the_reason_it_is_off(overrides, reason):
    config = load_run_config(None, ["model.name=tiny-llama", *overrides])
    model, _ = _model(lean_on=False)
    assert lean.apply(model, config) == reason
    tags = lean.tags(reason)
    assert tags["oneml.switch.lean_activations"] == ("false" if reason else "true")
    assert tags.get("oneml.switch.lean_activations_off_reason") == (reason or None)


def test_run_ids_of_earlier_configs_stay_valid():
    """Hashes computed before the key existed: the default (true) is left out of the identity, false is not."""
    assert load_run_config(None, []).run_id == "8bf6f9e90e75"
    assert load_run_config("configs/demo.yaml", []).run_id == "6be823c2b5dc"
    assert load_run_config(None, ["train.lean_activations=true"]).run_id == "8bf6f9e90e75"
    assert load_run_config(None, ["train.lean_activations=false"]).run_id != "8bf6f9e90e75"


# --- memory, measured: a subprocess whose allocator returns freed memory at once, so RSS is what is live ---------

PROBE = """
import json, sys, torch
sys.path.insert(0, {tests!r})
from models.test_lean import _model
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) * 1024
model, _ = _model(('q_proj', 'k_proj', 'v_proj', 'o_proj'), 0.05, lean_on={lean_on})
ids = torch.randint(0, 200, (4, 256), generator=torch.Generator().manual_seed(0))
model(input_ids=ids[:, :8], labels=ids[:, :8]).loss.backward()  # warm up: lazy init, threads
before = rss()
out = model(input_ids=ids, labels=ids)
after = rss()
print(json.dumps({{"stored": after - before}}))
"""


def _stored(lean_on: bool) -> int:
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    code = PROBE.format(tests=tests, lean_on=lean_on)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["stored"]


def test_a_training_forward_stores_less():
    """Per layer and token, plain stores LoRA's float noise and dropped input (8 x hidden over q/k/v/o) and the
    activation output (intermediate); lean stores four byte masks and the shared input (2 x hidden): here
    (hidden 64, intermediate 176) about 560 of 1.4k floats a layer-token; with the rest of the step (norm inputs,
    attention, logits) measured 0.71 of plain, so 0.8 leaves room for page-granular noise."""
    plain, leaner = _stored(False), _stored(True)
    assert leaner < 0.8 * plain, (plain, leaner)
