"""Bottleneck adapters: identity at init, placement (Houlsby 2 per layer, Pfeiffer 1), the parameter formula,
A(h) = h + up(f(down(h))) for every non-linearity, save/load of the adapter alone, and generation/checkpointing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from oneml import OnemlError, load_run_config
from oneml.config import ModelConfig
from oneml.methods import MethodContext
from oneml.methods.bottleneck import ACTIVATIONS, BottleneckAdapter, BottleneckConfig, adapters
from oneml.models import load_model_and_tokenizer

D, LAYERS = 64, 2  # tiny-llama / tiny-qwen2


def tiny_model(name: str = "tiny-llama"):
    model, _ = load_model_and_tokenizer(ModelConfig(name=name), device="cpu", seed=0)
    return model


def ids():
    return torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(0))


def randomise(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)


@pytest.mark.parametrize("model_name", ["tiny-llama", "tiny-qwen2"])
@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_adapted_model_starts_as_the_base(model_name, placement):
    base = tiny_model(model_name)
    with torch.no_grad():
        expected = base(ids()).logits
        adapted = BottleneckConfig(placement=placement).apply(base, MethodContext())
        assert torch.equal(adapted(ids()).logits, expected)


@pytest.mark.parametrize(
    ("placement", "per_layer", "roles"), [("houlsby", 2, {"self_attn", "mlp"}), ("pfeiffer", 1, {"mlp"})]
)
def test_placement_and_parameter_count(placement, per_layer, roles):
    factor = 8
    model = BottleneckConfig(placement=placement, reduction_factor=factor).apply(tiny_model(), MethodContext())
    found = [n.rsplit(".", 2)[-2] for n, m in model.named_modules() if isinstance(m, BottleneckAdapter)]
    assert len(found) == per_layer * LAYERS and set(found) == roles
    b = D // factor
    per_adapter = 2 * D * b + b + D  # W_down, b_down, W_up, b_up
    assert all(sum(p.numel() for p in a.parameters()) == per_adapter for a in adapters(model))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".bottleneck_adapter." in n for n in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == per_layer * LAYERS * per_adapter


@pytest.mark.parametrize("non_linearity", sorted(ACTIVATIONS))
def test_adapter_is_residual_bottleneck_mlp(non_linearity):
    reference = {
        "relu": torch.relu,
        "gelu": torch.nn.functional.gelu,
        "silu": torch.nn.functional.silu,
        "tanh": torch.tanh,
    }
    model = BottleneckConfig(non_linearity=non_linearity, reduction_factor=4).apply(tiny_model(), MethodContext())
    randomise(model)
    mlp = model.model.layers[1].mlp
    a = mlp.bottleneck_adapter
    h_in = torch.randn(2, 5, D)
    with torch.no_grad():
        h = torch.nn.functional.linear(  # the frozen Llama MLP: down(silu(gate x) * up x)
            torch.nn.functional.silu(h_in @ mlp.gate_proj.weight.T) * (h_in @ mlp.up_proj.weight.T),
            mlp.down_proj.weight,
        )
        f = reference[non_linearity]
        expected = h + (f(h @ a.down.weight.T + a.down.bias) @ a.up.weight.T + a.up.bias)
        torch.testing.assert_close(mlp(h_in), expected)


def test_save_writes_only_the_adapter_and_load_restores_it(tmp_path):
    cfg = BottleneckConfig(placement="houlsby", reduction_factor=8, non_linearity="gelu")
    model = cfg.apply(tiny_model(), MethodContext())
    randomise(model)
    cfg.save(model, tmp_path)
    state = load_file(tmp_path / "adapter_model.safetensors")
    assert len(state) == 4 * 2 * LAYERS and all(".bottleneck_adapter." in k for k in state)
    meta = json.loads((tmp_path / "bottleneck_config.json").read_text())
    assert meta["method"]["placement"] == "houlsby" and meta["adapters"] == 2 * LAYERS

    # The saved file decides the layout, whatever the config load is called on.
    reloaded = BottleneckConfig().load(tiny_model(), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids()).logits, model(ids()).logits)


def test_merge_is_refused_with_a_reason():
    cfg = BottleneckConfig()
    assert cfg.mergeable is False
    with pytest.raises(OnemlError, match="non-linear"):
        cfg.merge(cfg.apply(tiny_model(), MethodContext()))


def test_unknown_layout_names_the_model_type():
    class Mystery(torch.nn.Module):
        config = type("Config", (), {"model_type": "mystery"})()

        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4)])

    with pytest.raises(OnemlError, match="model type 'mystery'"):
        BottleneckConfig().apply(Mystery(), MethodContext())


def test_config_choices_come_from_the_registries():
    with pytest.raises(OnemlError, match="method.non_linearity: must be one of 'relu', 'gelu', 'silu' or 'tanh'"):
        load_run_config(None, ["method.name=bottleneck", "method.non_linearity=swish"])


def test_generation_and_checkpointing_see_the_adapters():
    base = tiny_model()
    prompt = ids()[:1, :4]
    with torch.no_grad():
        plain = base.generate(prompt, max_new_tokens=6, do_sample=False)
    model = BottleneckConfig(placement="houlsby").apply(base, MethodContext())
    with torch.no_grad():
        assert torch.equal(model.generate(prompt, max_new_tokens=6, do_sample=False), plain)  # identity at init
    randomise(model)
    model.train()
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.zero_grad()
        model(ids(), labels=ids()).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    for without, with_ in zip(*grads, strict=True):
        torch.testing.assert_close(with_, without)
