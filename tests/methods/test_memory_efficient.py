"""Memory-efficient full fine-tuning: GaLore's update is low-rank and its Adam state projected, APOLLO scales the raw
gradient per channel, BAdam trains one decoder layer at a time in order, LISA a seeded sample of layers per period
(dropping the others' Adam state); each refuses what it cannot do in one line. (2 SFT steps of each through `train()`,
with save / load / merge: test_matrix.py.)"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from methodkit import IDS, tiny

from oneml import OnemlError, load_run_config
from oneml.distributed import strategies
from oneml.methods import MethodContext
from oneml.methods.apollo import APOLLOConfig
from oneml.methods.badam import BAdamConfig
from oneml.methods.galore import GaLoreConfig
from oneml.methods.lisa import LISAConfig, sampled


def step(model: torch.nn.Module, optimizer) -> dict[str, torch.Tensor]:
    """One optimizer step on a fixed batch; returns the gradients it used (before the optimizer ran)."""
    loss = model(input_ids=IDS, labels=IDS).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    optimizer.zero_grad()
    return grads


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}


def test_galore_projects_the_targeted_gradients_to_rank_r_and_adamw_trains_the_rest():
    cfg = GaLoreConfig(rank=4, scale=0.25, target_modules=["q_proj", "down_proj"])
    model = cfg.apply(tiny(), MethodContext())
    optimizer = cfg.optimizer(model, 1e-2, 0.0)
    assert type(optimizer).__module__.startswith("galore_torch")
    before = snapshot(model)
    step(model, optimizer)
    for name, param in model.named_parameters():
        delta = param.detach() - before[name]
        moments = optimizer.state[param]["exp_avg"]
        if name.endswith(("q_proj.weight", "down_proj.weight")):
            assert min(moments.shape) == 4 and moments.numel() < param.numel()  # Adam state of G P^T only
            assert torch.linalg.matrix_rank(delta) <= 4 < min(delta.shape), name  # the update lives in rank r
        elif param.ndim == 2 and "embed" not in name:
            assert moments.shape == param.shape and torch.linalg.matrix_rank(delta) > 4, name  # plain AdamW
    assert changed(model, before) == set(before)  # every weight trains: full fine-tuning


def test_apollo_scales_the_raw_gradient_per_channel_from_a_projected_adam_state():
    cfg = APOLLOConfig(rank=4, target_modules=["q_proj"])
    model = cfg.apply(tiny(), MethodContext())
    optimizer = cfg.optimizer(model, 1e-2, 0.0)
    assert type(optimizer).__module__.startswith("apollo_torch")
    before = snapshot(model)
    grads = step(model, optimizer)
    name = "model.layers.0.self_attn.q_proj.weight"
    param = dict(model.named_parameters())[name]
    assert min(optimizer.state[param]["exp_avg"].shape) == 4
    ratio = (param.detach() - before[name]) / grads[name]  # = -lr * sqrt(scale) * s: one factor per channel
    per_channel = ratio.std(dim=1) / ratio.abs().mean(dim=1)  # q_proj is square: APOLLO scales its rows
    assert per_channel.max() < 1e-3 and ratio.mean(dim=1).std() > 1e-4  # constant within a row, varies across


def test_badam_trains_one_decoder_layer_at_a_time_in_order():
    cfg = BAdamConfig(switch_every=1, switch_mode="ascending")
    model = cfg.apply(tiny(), MethodContext())
    optimizer = cfg.optimizer(model, 1e-2, 0.0)
    trained = []
    for _ in range(3):
        before = snapshot(model)
        step(model, optimizer)
        layers = {n.split(".")[2] for n in changed(model, before)}
        assert all(n.startswith("model.layers.") for n in changed(model, before))  # embeddings, head: frozen
        trained.append(layers)
    assert trained == [{"0"}, {"1"}, {"0"}]


def test_lisa_trains_the_outer_parts_and_a_seeded_sample_of_layers_each_period():
    assert sampled(30, 2, seed=0, period=3) == sampled(30, 2, seed=0, period=3)  # resumable: no global state
    draws = {tuple(sampled(30, 2, seed=0, period=p)) for p in range(20)}
    assert len(draws) > 10 and all(len(set(d)) == 2 for d in draws)
    assert sampled(30, 2, seed=1, period=0) != sampled(30, 2, seed=0, period=0) or sampled(
        30, 2, seed=1, period=1
    ) != sampled(30, 2, seed=0, period=1)

    cfg = LISAConfig(layers=1, interval=1)
    ctx = MethodContext(seed=5)  # draws layer 0, 0, 1, 1, 0, 0: both ways across a switch
    model = cfg.apply(tiny(), ctx)
    optimizer = cfg.optimizer(model, 1e-2, 0.0)
    (sampling,) = cfg.callbacks(model, ctx)
    drawn = []
    for period in range(6):
        state = type("State", (), {"global_step": period})()
        sampling.on_step_begin(None, state, None, optimizer=optimizer)
        before = snapshot(model)
        step(model, optimizer)
        moved = changed(model, before)
        layer = sampled(2, 1, seed=5, period=period)[0]
        drawn.append(layer)
        assert {n for n in moved if ".layers." in n} == {n for n in before if f".layers.{layer}." in n}
        assert {"model.embed_tokens.weight", "model.norm.weight"} <= moved  # always trained
        frozen = [p for n, p in model.named_parameters() if f".layers.{1 - layer}." in n]
        assert not any(p in optimizer.state for p in frozen)  # a layer out of the sample has no Adam state
    assert drawn == [0, 0, 1, 1, 0, 0]


def test_lisa_refuses_more_layers_than_the_model_has():
    with pytest.raises(OnemlError, match=r"^method.layers: at most this model's 2 decoder layers, got 3$"):
        LISAConfig(layers=3).apply(tiny(), MethodContext())


@pytest.mark.parametrize(
    ("name", "package"), [("galore", "galore-torch"), ("apollo", "apollo-torch"), ("badam", "badam")]
)
def test_a_missing_package_is_one_line_naming_it(name, package, monkeypatch):
    real = importlib.util.find_spec
    module = package.replace("-", "_")
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == module else real(m, *a))
    with pytest.raises(OnemlError) as err:
        load_run_config(None, [f"method.name={name}"]).method.check(MethodContext())
    assert str(err.value).startswith(f"method {name}: needs the {package} package") and f"pip install {package}" in str(
        err.value
    )


@pytest.mark.parametrize(
    ("method", "strategy", "refused"),
    [
        ("lisa", "ddp", "method lisa switches which layers train"),
        ("badam", "ddp", "method badam switches which layers train"),
        ("galore", "fsdp", "fsdp cannot pass method galore's own optimizer"),
        ("apollo", "zero2", "zero2 flattens and partitions"),
        ("galore", "ddp", None),
    ],
)
def test_several_processes_are_refused_where_the_method_cannot_follow(method, strategy, refused):
    cfg = load_run_config(
        None,
        [
            f"method.name={method}",
            "distributed.nproc=2",
            "distributed.launcher=torchrun",
            f"distributed.strategy={strategy}",
            "model.name=tiny-llama",
        ],
    )
    if refused is None:
        strategies.check(cfg, "cpu")
        return
    with pytest.raises(OnemlError) as err:
        strategies.check(cfg, "cpu")
    assert str(err.value).startswith("distributed.strategy: ") and refused in str(err.value)
