"""The LoRA family's inits and layer options: each one really happens (EVA's A is the data's principal directions,
CorDA's adapter is the top/bottom-r part of W0 C, LoftQ's fits the quantization error, orthogonal's B A = 0 with
neither zero, patterns set a layer's rank and scale), is refused in one line where it cannot apply, and round-trips
through save / load / merge onto the original base."""

from __future__ import annotations

import json

import pytest
import torch
from methodkit import logits, tiny
from test_lora import perturb

from oneml import OnemlError, load_run_config
from oneml.config import ModelConfig
from oneml.methods import MethodContext
from oneml.methods.lora import LoRAConfig
from oneml.methods.targets import adapted_layers
from oneml.models import load_model_and_tokenizer
from oneml.models.quantization import dequantized_weight, round_trip


def batches(count: int, seed: int = 0, length: int = 40) -> list[dict[str, torch.Tensor]]:
    """Stand-in calibration batches (2 rows each), different for each seed."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(0, 255, (2, length), generator=gen)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return out


def ctx(seed: int = 0) -> MethodContext:
    return MethodContext(calibration=lambda n: batches(n, seed))


def inputs_of(model: torch.nn.Module, layer: str, data: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """The inputs (T, d_in) the named linear layer sees, one tensor per sequence."""
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    with torch.no_grad():
        for batch in data:
            for ids in batch["input_ids"]:
                model(input_ids=ids.unsqueeze(0))
    handle.remove()
    return [x.squeeze(0) for x in seen]


def factors(model: torch.nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    for layer_name, layer, a in adapted_layers(model):
        if layer_name == name:
            return layer.lora_A[a].weight.detach(), layer.lora_B[a].weight.detach(), layer.scaling[a]
    raise KeyError(name)


Q0 = "model.layers.0.self_attn.q_proj"


# --- EVA ----------------------------------------------------------------------------------------------------------


def test_eva_sets_a_to_the_principal_directions_of_the_layers_training_inputs():
    cfg = LoRAConfig(r=4, init="eva", eva_rho=1.0, calibration_batches=4, target_modules=["q_proj"], dropout=0.0)
    base = tiny()
    expected = logits(base)
    X = torch.cat(inputs_of(base, Q0, batches(4)))  # (N, d_in)
    model = cfg.apply(base, ctx())
    A, B, _ = factors(model, Q0)
    assert not B.any()  # B0 = 0: training starts from W0
    torch.testing.assert_close(logits(model), expected, atol=0, rtol=0)
    _, _, Vh = torch.linalg.svd(X - X.mean(0), full_matrices=False)  # EVA's incremental PCA centres the inputs

    def overlap(M: torch.Tensor) -> float:  # 1: M's rows span the inputs' top-4 principal directions; ~4/64: random
        return (torch.linalg.qr(M.T)[0].T @ Vh[:4].T).square().sum().item() / 4

    # peft's incremental, randomized SVD stops at a cosine of 0.99 between passes: near, not equal, to the exact one.
    assert overlap(A) > 0.8
    kaiming = LoRAConfig(r=4, target_modules=["q_proj"]).apply(tiny(), ctx())
    assert overlap(factors(kaiming, Q0)[0]) < 0.3
    other = LoRAConfig(r=4, init="eva", eva_rho=1.0, calibration_batches=4, target_modules=["q_proj"]).apply(
        tiny(), ctx(seed=1)
    )
    assert not torch.allclose(factors(other, Q0)[0].abs(), A.abs(), atol=1e-3)  # other data, another A


def test_eva_without_training_rows_is_one_line():
    with pytest.raises(OnemlError, match=r"^method.init: eva reads training batches"):
        LoRAConfig(init="eva").apply(tiny(), MethodContext())


# --- CorDA --------------------------------------------------------------------------------------------------------


def corda_covariance(model: torch.nn.Module, data: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """CorDA's input covariance, damped, as the paper (and peft) build it: each sequence scaled by its maximum."""
    seqs = inputs_of(model, Q0, data)
    C = sum((x / x.max().abs()).T @ (x / x.max().abs()) for x in seqs) / len(seqs)
    damp = 0.01
    while True:
        fixed = C + torch.eye(C.shape[0]) * C.diag().mean() * damp
        if torch.dist(fixed @ torch.linalg.inv(fixed), torch.eye(C.shape[0])) < 0.05:
            return fixed
        damp *= 2


@pytest.mark.parametrize("mode", ["ipm", "kpm"])
def test_corda_moves_the_top_or_bottom_r_part_of_w0_c_into_the_adapter(mode):
    cfg = LoRAConfig(r=4, alpha=8, init="corda", corda_mode=mode, calibration_batches=3, target_modules=["q_proj"])
    base = tiny()
    W0 = base.get_submodule(Q0).weight.detach().clone()
    C = corda_covariance(base, batches(3))
    model = cfg.apply(base, ctx())
    A, B, s = factors(model, Q0)
    W_res = model.get_base_model().get_submodule(Q0).base_layer.weight
    torch.testing.assert_close(W_res + s * B @ A, W0, atol=2e-6, rtol=0)  # the model starts as W0
    U, S, Vh = torch.linalg.svd(W0 @ C, full_matrices=False)
    part = slice(0, 4) if mode == "ipm" else slice(-4, None)
    expected = U[:, part] @ torch.diag(S[part]) @ Vh[part]
    torch.testing.assert_close(s * B @ A @ C, expected, atol=1e-4, rtol=1e-3)
    assert model.oneml_initial and cfg.mutates_base() and cfg.saved_copies() == 2  # `save` converts to the original
    other = cfg.apply(tiny(), ctx(seed=1))
    assert not torch.allclose(factors(other, Q0)[0].abs(), A.abs(), atol=1e-3)  # other data, another adapter


# --- LoftQ --------------------------------------------------------------------------------------------------------


def test_loftq_fits_the_quantization_error_and_keeps_the_base_q_w0():
    cfg = LoRAConfig(r=8, alpha=16, init="loftq", quantize="nf4", target_modules=["q_proj", "down_proj"])
    base = tiny()
    originals = {n: m.weight.detach().clone() for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)}
    model = cfg.apply(base, MethodContext())
    assert not cfg.mutates_base() and cfg.saved_copies() == 1
    for name, layer, a in adapted_layers(model):
        W0 = originals[name]
        deq = dequantized_weight(layer.get_base_layer()).float()
        torch.testing.assert_close(deq, round_trip(W0, "nf4").float(), atol=0, rtol=0)  # the base is Q(W0)
        error = W0 - deq
        U, S, Vh = torch.linalg.svd(error, full_matrices=False)
        BA = layer.scaling[a] * layer.lora_B[a].weight @ layer.lora_A[a].weight
        torch.testing.assert_close(BA, U[:, :8] @ torch.diag(S[:8]) @ Vh[:8], atol=1e-5, rtol=1e-4)
        assert (error - BA).norm() < 0.9 * error.norm(), name  # nearer W0 than QLoRA's start


def test_loftq_with_more_steps_quantizes_a_residual_and_says_the_base_changed():
    cfg = LoRAConfig(r=8, init="loftq", quantize="nf4", loftq_iter=2, target_modules=["q_proj"])
    base = tiny()
    W0 = base.get_submodule(Q0).weight.detach().clone()
    model = cfg.apply(base, MethodContext())
    assert cfg.mutates_base() and cfg.saved_copies() == 2
    A1, B1 = model.oneml_initial[Q0]  # the step before the last: the base is Q(W0 - s B1 A1)
    s = cfg.scaling
    deq = dequantized_weight(model.get_base_model().get_submodule(Q0).base_layer).float()
    torch.testing.assert_close(deq, round_trip(W0 - s * B1 @ A1, "nf4").float(), atol=0, rtol=0)
    A, B, _ = factors(model, Q0)
    U, S, Vh = torch.linalg.svd(W0 - deq, full_matrices=False)
    torch.testing.assert_close(s * B @ A, U[:, :8] @ torch.diag(S[:8]) @ Vh[:8], atol=1e-5, rtol=1e-4)


# --- orthogonal ---------------------------------------------------------------------------------------------------


def test_orthogonal_init_starts_from_w0_with_neither_factor_zero():
    base = tiny()
    expected = logits(base)
    model = LoRAConfig(r=8, init="orthogonal", dropout=0.0, target_modules="all-linear").apply(base, MethodContext())
    for _, layer, a in adapted_layers(model):
        A, B = layer.lora_A[a].weight.detach(), layer.lora_B[a].weight.detach()
        assert A.norm() > 0.1 and B.norm() > 0.1
        torch.testing.assert_close(B @ A, torch.zeros_like(B @ A), atol=1e-6, rtol=0)  # complementary halves
        assert torch.linalg.matrix_rank(A) == 4 and torch.linalg.matrix_rank(B) == 4  # r / 2 each
    torch.testing.assert_close(logits(model), expected, atol=1e-5, rtol=0)


# --- which layers, with which rank and alpha ----------------------------------------------------------------------


def test_patterns_set_a_layers_rank_and_scale_and_layers_to_transform_picks_layers():
    cfg = LoRAConfig(
        r=8,
        alpha=16,
        target_modules="all-linear",
        rank_pattern={"q_proj": 2, "layers.1.mlp.down_proj": 6},
        alpha_pattern={"v_proj": 3.0},
        layers_to_transform=[1],
    )
    model = cfg.apply(tiny(), MethodContext())
    seen = {name: (layer.r[a], layer.scaling[a]) for name, layer, a in adapted_layers(model)}
    assert seen and all(".layers.1." in name for name in seen)  # layer 0 is left alone
    assert seen["model.layers.1.self_attn.q_proj"] == (2, 16 / 2)
    assert seen["model.layers.1.mlp.down_proj"] == (6, 16 / 6)
    assert seen["model.layers.1.self_attn.v_proj"] == (8, 3.0 / 8)
    assert seen["model.layers.1.self_attn.k_proj"] == (8, 16 / 8)
    assert factors(model, "model.layers.1.self_attn.q_proj")[0].shape == (2, 64)


@pytest.mark.parametrize(
    ("fields", "field", "named"),
    [
        ({"rank_pattern": {"x_proj": 4}}, "method.rank_pattern", "q_proj, v_proj"),
        ({"alpha_pattern": {"layers.7.self_attn.q_proj": 4.0}}, "method.alpha_pattern", "q_proj, v_proj"),
        ({"layers_to_transform": [0, 5]}, "method.layers_to_transform", "5 out of range; this model has layers 0-1"),
        ({"layers_to_transform": [0], "layers_pattern": "blocks"}, "method.layers_pattern", "'blocks'"),
    ],
)
def test_layer_options_that_match_nothing_in_the_model_are_one_line_naming_what_exists(fields, field, named):
    with pytest.raises(OnemlError) as err:
        LoRAConfig(**fields).apply(tiny(), MethodContext())
    message = str(err.value)
    assert message.startswith(f"{field}:") and named in message and "\n" not in message


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["method.eva_rho=1.5"], "method.eva_rho"),
        (["method.init=eva", "method.corda_mode=kpm"], "method.corda_mode"),
        (["method.calibration_batches=4"], "method.calibration_batches"),
        (["method.init=corda", "method.loftq_iter=2", "method.quantize=nf4"], "method.loftq_iter"),
        (["method.init=eva", "method.eva_rho=0.5"], "method.eva_rho"),
        (["method.init=loftq"], "method.init"),
        (["method.init=orthogonal", "method.r=5"], "method.r"),
        (["method.init=orthogonal", "method.rank_pattern={q_proj: 3}"], "method.r"),
        (["method.init=gaussian", "method.lora_bias=true"], "method.lora_bias"),
        (["method.name=dora", "method.lora_bias=true"], "method.lora_bias"),
        (["method.layers_pattern=layers"], "method.layers_pattern"),
        (["method.layers_to_transform=[]"], "method.layers_to_transform"),
        (["method.rank_pattern={'q_proj(': 4}"], "method.rank_pattern"),
        (["method.rank_pattern={q_proj: 0}"], "method.rank_pattern"),
        (["method.init=svd"], "method.init"),
        (["method.name=pissa", "method.corda_mode=kpm"], "method.corda_mode"),
    ],
)
def test_contradictory_options_are_refused_as_the_config_loads(overrides, field):
    with pytest.raises(OnemlError) as err:
        load_run_config(None, overrides)
    message = str(err.value)
    assert message.startswith(field) and message[len(field)] in ":." and "\n" not in message, message


# --- lora_bias ----------------------------------------------------------------------------------------------------


def test_lora_bias_trains_a_bias_on_b_and_merges_only_into_layers_with_a_bias(tmp_path):
    qwen = load_model_and_tokenizer(ModelConfig(name="tiny-qwen2"))[0]  # q/k/v have biases
    cfg = LoRAConfig(r=4, lora_bias=True, dropout=0.0, target_modules=["q_proj", "v_proj"])
    model = cfg.apply(qwen, MethodContext())
    for _, layer, a in adapted_layers(model):
        assert layer.lora_B[a].bias is not None and layer.lora_B[a].bias.requires_grad
    perturb(model)
    expected = logits(model)
    cfg.save(model, tmp_path)
    reloaded = cfg.load(load_model_and_tokenizer(ModelConfig(name="tiny-qwen2"))[0], tmp_path)
    torch.testing.assert_close(logits(reloaded), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(cfg.merge(reloaded)), expected, atol=1e-5, rtol=1e-5)

    llama = cfg.apply(tiny(), MethodContext())  # Llama's projections have no bias to fold B's into
    with pytest.raises(OnemlError, match=r"^method.lora_bias: cannot merge B's bias into model.layers.0"):
        cfg.merge(llama)


# --- save / load / merge ------------------------------------------------------------------------------------------

ROUND_TRIPS = {
    "eva": dict(init="eva", r=4, target_modules=["q_proj", "v_proj"], calibration_batches=3),
    "eva-dora": dict(init="eva", r=4, target_modules=["q_proj"], calibration_batches=3, use_dora=True),
    "corda": dict(init="corda", calibration_batches=2),
    "corda-nf4": dict(init="corda", quantize="nf4", calibration_batches=2),
    "orthogonal-nf4": dict(init="orthogonal", quantize="nf4"),
    "loftq": dict(init="loftq", quantize="nf4"),
    "loftq-2-steps": dict(init="loftq", quantize="nf4", loftq_iter=2),
    "pissa-patterns-rslora": dict(
        init="pissa", rslora=True, rank_pattern={"q_proj": 4}, alpha_pattern={"v_proj": 3.0}, quantize="nf4"
    ),
    "layers": dict(layers_to_transform=[1], target_modules="all-linear", rank_pattern={"down_proj": 2}),
}


@pytest.mark.parametrize("name", list(ROUND_TRIPS))
def test_trained_adapter_reloads_onto_the_original_base_and_merges(name, tmp_path):
    cfg = LoRAConfig(**({"r": 8, "dropout": 0.0} | ROUND_TRIPS[name]))
    model = cfg.apply(tiny(), ctx())
    perturb(model)
    expected = logits(model)
    cfg.save(model, tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["init_lora_weights"] in (True, "eva")  # loading never reruns a data-driven or SVD init
    if cfg.mutates_base():  # a plain rank-2r LoRA against the original base, patterns doubled with it
        assert saved["r"] == 2 * cfg.r
        assert all(v == 2 * cfg.rank_pattern[k] for k, v in saved["rank_pattern"].items())
    reloaded = cfg.load(tiny(), tmp_path)  # the original model, as loading gives it
    torch.testing.assert_close(logits(reloaded), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(cfg.merge(reloaded)), expected, atol=1e-4, rtol=1e-4)
