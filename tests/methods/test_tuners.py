"""The methods that are one peft tuner (methods/tuners.py) and the escape hatch (methods/anypeft.py): quantized bases
compute exactly as the dequantized model and merge into it, refusals are one line, the low-rank factors behind kappa
are the update peft applies, and `method: {name: peft, ...}` is validated against peft's own config classes."""

from __future__ import annotations

import pytest
import torch
from methodkit import CTX, IDS, logits, tiny
from peft.tuners.tuners_utils import BaseTunerLayer

from oneml import OnemlError, load_run_config
from oneml.config import ModelConfig
from oneml.methods import METHODS, MethodContext
from oneml.methods.anypeft import AnyPeftConfig
from oneml.methods.tuners import LowRankKappa, PeftTuner, tuner_layers
from oneml.models import load_model_and_tokenizer
from oneml.models.quantization import dequantize_model, is_quantized

TINY = {"c3a": {"block_size": 16}, "vblora": {"vector_length": 16, "num_vectors": 32}, "road": {"group_size": 16},
        "shira": {"r": 8}}  # fmt: skip
"""Sizes that fit tiny-llama's 32-wide k/v projections (test_matrix.py uses the same)."""
TUNERS = [e.name for e in METHODS.entries() if issubclass(e.value, PeftTuner) and e.value is not AnyPeftConfig]
QUANTIZABLE = [n for n in TUNERS if not METHODS.get(n).quantize_refusal]
LOW_RANK = [n for n in TUNERS if METHODS.get(n).factors is not PeftTuner.factors]


def perturb(model: torch.nn.Module) -> None:
    """Move every trainable weight off its (often identity) init, so the adapters change the output."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen).to(p.dtype))


def method(name: str, **fields):
    return METHODS.get(name)(**(TINY.get(name, {}) | fields))


def bf16_tiny() -> torch.nn.Module:
    return load_model_and_tokenizer(ModelConfig(name="tiny-llama", dtype="bfloat16"))[0]


@pytest.mark.parametrize("name", QUANTIZABLE)
def test_a_4bit_base_reloads_exactly_and_merges_into_its_dequantized_twin(name, tmp_path):
    cfg = method(name, quantize="nf4")
    fresh = bf16_tiny if cfg.quantized_needs_bfloat16 else tiny
    model = cfg.apply(fresh(), CTX)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.bfloat16}  # as TRL trains them
    perturb(model)
    quantized = logits(model)
    cfg.save(model, tmp_path)
    torch.testing.assert_close(logits(cfg.load(fresh(), tmp_path)), quantized, atol=0, rtol=0)  # same 4-bit codes
    tol = 1e-2  # the adapter computes in bfloat16 unmerged, in float32 merged
    if not cfg.mergeable:  # the base's linear layers are not wrapped: dequantize them in place
        torch.testing.assert_close(logits(dequantize_model(model)), quantized, atol=tol, rtol=tol)
        return
    merged = cfg.merge(model)  # onto the dequantized weights, then folded in
    assert not any(is_quantized(m) or isinstance(m, BaseTunerLayer) for m in merged.modules())  # a plain float model
    torch.testing.assert_close(logits(merged), quantized, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", [n for n in TUNERS if n not in QUANTIZABLE])
def test_tuners_that_read_the_base_weight_refuse_a_quantized_base_in_one_line(name):
    with pytest.raises(OnemlError, match=f"^method.quantize: {name} computes on the base weight itself") as err:
        method(name, quantize="nf4").check(CTX)
    assert "\n" not in str(err.value)


def test_a_tuner_whose_output_is_not_cast_back_needs_a_bfloat16_model_when_quantized():
    with pytest.raises(OnemlError, match="method.quantize: road on a quantized base needs model.dtype: bfloat16"):
        method("road", quantize="nf4").apply(tiny(), CTX)


@pytest.mark.parametrize("name", LOW_RANK)
def test_low_rank_factors_are_the_update_peft_applies(name):
    cfg = method(name)
    model = cfg.apply(tiny(), CTX)
    perturb(model)
    layers = tuner_layers(model)
    assert layers
    with torch.no_grad():
        for _, layer, adapter in layers:
            A, B = cfg.factors(layer, adapter)
            assert A.shape[1] == layer.in_features and B.shape[0] == layer.out_features and A.shape[0] == B.shape[1]
            eye = torch.eye(layer.in_features)
            applied = (layer.eval()(eye) - layer.get_base_layer()(eye)).T  # dW as the forward applies it
            torch.testing.assert_close(B @ A, applied, atol=1e-5, rtol=1e-4)
    logged = []
    (kappa,) = cfg.callbacks(model, MethodContext(log_metrics=lambda m, step: logged.append(m)))
    assert isinstance(kappa, LowRankKappa)
    kappa.record(1)
    assert logged[0]["kappa_max"] >= 1 and len([k for k in logged[0] if k.startswith("kappa/")]) == len(layers)


def test_full_rank_and_orthogonal_tuners_log_no_kappa():
    for name in ("oft", "loha", "randlora", "c3a"):
        assert method(name).callbacks(method(name).apply(tiny(), CTX), CTX) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.name=loha", "method.r=0"], "^method.r: must be a positive integer, got 0"),
        (
            ["method.name=ia3", "method.feedforward_modules=[up_proj]"],
            "^method.feedforward_modules: up_proj must be in",
        ),
        (
            ["method.name=road", "method.variant=road_3"],
            "^method.variant: must be one of 'road_1', 'road_2' or 'road_4', got 'road_3'",
        ),
    ],
)
def test_bad_settings_are_refused_at_load_in_one_line(overrides, message):
    with pytest.raises(OnemlError, match=message) as err:
        load_run_config(None, overrides)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.name=vera", "method.target_modules=[attn]"], "^method.target_modules: attn match no linear layer"),
        (["method.name=c3a"], "^method c3a: The block size should be a factor of the output size"),
        (["method.name=ln_tuning", "method.target_modules=[nope_norm]"], r"^method ln_tuning: Target modules \['nope"),
        (["method.name=trainable_tokens", "method.token_indices=[5, 99999]"], r"^method.token_indices: \[99999\]"),
    ],
)
def test_settings_the_model_cannot_take_are_one_line_before_training(overrides, message):
    cfg = load_run_config(None, ["model.name=tiny-llama", *overrides])
    with pytest.raises(OnemlError, match=message) as err:
        cfg.method.apply(tiny(), CTX)
    assert "\n" not in str(err.value)


def test_trainable_tokens_default_to_the_special_tokens_and_train_only_those_rows():
    model = tiny()
    config = model.config
    expected = sorted({config.bos_token_id, config.eos_token_id, config.pad_token_id} - {None})
    adapted = method("trainable_tokens").apply(model, CTX)
    (_, layer, adapter) = tuner_layers(adapted)[0]
    assert sorted(layer.token_indices[adapter]) == expected
    assert sum(p.numel() for p in adapted.parameters() if p.requires_grad) == len(expected) * config.hidden_size


def test_trainable_tokens_refuse_a_model_with_tied_embeddings_in_one_line():
    model = tiny()
    model.lm_head.weight = model.get_input_embeddings().weight
    with pytest.raises(OnemlError, match="^method trainable_tokens: this model ties its output head"):
        method("trainable_tokens").apply(model, CTX)


def test_adaption_prompts_use_a_head_installed_after_peft_wrapped_the_model():
    from oneml.models.lm_head import install_chunked_head

    model = method("adaption_prompt").apply(tiny(), CTX)
    perturb(model)  # the gate opens: the prompts change the output
    install_chunked_head(model)
    with torch.no_grad():
        out = model(IDS, labels=IDS, fused_lm_head=True)
        full = torch.log_softmax(model(IDS).logits[:, :-1].float(), -1).gather(-1, IDS[:, 1:, None])[..., 0]
    torch.testing.assert_close(out.log_probs, full, atol=1e-5, rtol=1e-5)


def test_adaption_prompts_refuse_an_architecture_peft_does_not_support_in_one_line():
    qwen = load_model_and_tokenizer(ModelConfig(name="tiny-qwen2"))[0]
    with pytest.raises(OnemlError, match="^method adaption_prompt: .*qwen2"):
        method("adaption_prompt").apply(qwen, CTX)


# --- the escape hatch -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method_yaml", "message"),
    [
        ("{name: peft, type: NOPE}", r"^method.type: unknown peft type 'NOPE'; known: ADALORA, .*VERA"),
        ("{name: peft, type: hira, config: {rr: 4}}", r"^method.config.rr: not a field of peft's HiraConfig \(did you"),
        ("{name: peft, type: OFT, config: {r: 4, oft_block_size: 4}}", r"^method.config: OFTConfig: .*"),
        ("{name: peft, type: LORA, config: {task_type: SEQ_CLS}}", "method.config.task_type: not a field"),
    ],
)
def test_peft_configs_are_validated_when_the_config_loads(method_yaml, message):
    with pytest.raises(OnemlError, match=message) as err:
        load_run_config(None, [f"method={method_yaml}"])
    assert "\n" not in str(err.value)


def test_any_peft_type_trains_with_peft_defaults_and_declares_what_peft_can():
    cfg = load_run_config(None, ["method={name: peft, type: gralora, config: {r: 4}}"]).method
    assert type(cfg).complexity == (50, "a peft config oneml has no file for: unknown")
    model = cfg.apply(tiny(), CTX)
    assert next(iter(model.peft_config.values())).peft_type.name == "GRALORA"
    perturb(model)
    torch.testing.assert_close(logits(cfg.merge(model)), logits(model), atol=1e-5, rtol=1e-5)
    prompt = AnyPeftConfig(type="PROMPT_TUNING", config={"num_virtual_tokens": 4})
    assert cfg.mergeable and not prompt.mergeable
    assert prompt.objective_refusal("orpo") == METHODS.get("prompt_tuning")().objective_refusal("orpo")
    with pytest.raises(OnemlError, match="gradient checkpointing is not supported with PREFIX_TUNING"):
        AnyPeftConfig(type="PREFIX_TUNING", config={"num_virtual_tokens": 4}).check(
            MethodContext(gradient_checkpointing=True)
        )


def test_a_peft_tuner_peft_cannot_merge_is_one_line():
    cfg = AnyPeftConfig(type="LILY", config={"target_modules": ["q_proj", "v_proj"]})
    with pytest.raises(OnemlError, match="^method peft: peft cannot merge a LILY adapter .*export --mode adapter"):
        cfg.merge(cfg.apply(tiny(), CTX))


@pytest.mark.parametrize("name", [n for n in TUNERS if METHODS.get(n).fsdp_refusal] + ["peft"])
def test_fsdp_refuses_the_tuners_it_cannot_shard_before_any_process_starts(name):
    from oneml.distributed import strategies

    twin = ["method.type=PROMPT_TUNING", "method.config={num_virtual_tokens: 4}"] if name == "peft" else []
    overrides = ["distributed.launcher=torchrun", "distributed.nproc=2", "distributed.strategy=fsdp"]
    cfg = load_run_config(None, [*overrides, f"method.name={name}", *twin])
    shown = "prompt_tuning" if name == "peft" else name
    with pytest.raises(
        OnemlError, match=f"^distributed.strategy: fsdp cannot shard method {shown}: .*use strategy ddp"
    ):
        strategies.check(cfg, "cpu")
