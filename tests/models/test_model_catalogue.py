"""The catalogue: every preset is described, and every buildable one builds offline and runs a forward pass."""

from __future__ import annotations

import pytest
import torch

from oneml.config import ModelConfig
from oneml.methods.targets import linear_module_names
from oneml.models import MODELS, ModelPreset, describe_model, load_model_and_tokenizer

KINDS = {"embedded", "tiny", "architecture"}
TINY = [n for n in MODELS.names() if MODELS.get(n).kind == "tiny"]
ARCHITECTURES = [n for n in MODELS.names() if MODELS.get(n).kind == "architecture"]


def _forward(model, tokenizer) -> torch.Tensor:
    ids = torch.tensor([tokenizer("Hello, world").input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[:2] == ids.shape
    assert torch.isfinite(logits.float()).all()
    return logits


@pytest.mark.parametrize("name", MODELS.names())
def test_every_preset_is_described(name):
    entry = MODELS.entry(name)
    preset = entry.value
    assert isinstance(preset, ModelPreset)
    assert preset.name == name
    assert preset.description and entry.description == preset.description
    assert preset.kind in KINDS
    assert preset.arch.get("model_type"), "every preset records its architecture"
    if preset.kind != "tiny":
        assert preset.hub_id and "/" in preset.hub_id
        assert preset.arch.get("vocab_size") and preset.arch.get("hidden_size")


def test_catalogue_has_each_kind():
    assert {MODELS.get(n).kind for n in MODELS.names()} == KINDS
    assert len(TINY) >= 2 and len(ARCHITECTURES) >= 5


@pytest.mark.parametrize("name", TINY)
def test_tiny_preset_builds_with_byte_tokenizer(name):
    # init: pretrained (the default) is ignored: a tiny preset is always random.
    model, tokenizer = load_model_and_tokenizer(ModelConfig(name=name))
    assert len(tokenizer) == 259
    assert model.config.vocab_size == 259
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight, "lm_head is separate"
    assert model.config.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.chat_template
    assert not model.training
    _forward(model, tokenizer)


def test_tiny_overrides_apply():
    model, _ = load_model_and_tokenizer(ModelConfig(name="tiny-llama", overrides={"num_hidden_layers": 1}))
    assert model.config.num_hidden_layers == 1
    assert len(model.model.layers) == 1


# Linear layer names each architecture must expose: methods target separate and fused projections differently.
LAYERS = {
    "qwen2.5-0.5b": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "qwen2.5-1.5b": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "qwen2.5-3b": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "llama-3.2-1b": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "phi-2": {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"},
    "phi-3-mini": {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"},
}


def test_layer_expectations_cover_the_catalogue():
    assert set(LAYERS) == set(ARCHITECTURES)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_architecture_preset_builds_random_offline(name):
    preset = MODELS.get(name)
    cfg = ModelConfig(name=name, init="random", dtype="bfloat16", overrides={"num_hidden_layers": 1})
    model, tokenizer = load_model_and_tokenizer(cfg)
    assert model.config.model_type == preset.arch["model_type"]
    assert model.config.num_hidden_layers == 1
    # Only the depth shrinks: the shapes are the real model's.
    assert model.config.vocab_size == preset.arch["vocab_size"]
    assert model.config.hidden_size == preset.arch["hidden_size"]
    assert model.config.intermediate_size == preset.arch["intermediate_size"]
    assert model.config.tie_word_embeddings == preset.arch["tie_word_embeddings"]
    assert model.get_input_embeddings().weight.shape == (preset.arch["vocab_size"], preset.arch["hidden_size"])
    assert model.dtype == torch.bfloat16
    assert len(tokenizer) == 259, "random init uses the byte tokenizer by default"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    names = set(linear_module_names(model))
    assert LAYERS[name] <= names
    if name == "phi-3-mini":
        assert "q_proj" not in names, "Phi-3 keeps q/k/v fused"
    if name == "llama-3.2-1b":
        rope = model.config.rope_parameters
        assert rope["rope_type"] == "llama3" and rope["factor"] == 32.0 and rope["rope_theta"] == 500000.0
    _forward(model, tokenizer)


def test_real_architecture_figures():
    """Independent spot checks of the stored configs against the published config.json values."""
    qwen = MODELS.get("qwen2.5-0.5b").arch
    assert (qwen["vocab_size"], qwen["hidden_size"], qwen["num_hidden_layers"]) == (151936, 896, 24)
    assert (qwen["num_attention_heads"], qwen["num_key_value_heads"], qwen["intermediate_size"]) == (14, 2, 4864)
    llama = MODELS.get("llama-3.2-1b").arch
    assert (llama["vocab_size"], llama["hidden_size"], llama["num_hidden_layers"]) == (128256, 2048, 16)
    assert llama["rope_scaling"]["rope_type"] == "llama3" and llama["rope_scaling"]["factor"] == 32.0
    qwen15 = MODELS.get("qwen2.5-1.5b").arch  # Qwen/Qwen2.5-1.5B-Instruct config.json
    assert (qwen15["hidden_size"], qwen15["intermediate_size"], qwen15["num_hidden_layers"]) == (1536, 8960, 28)
    assert (qwen15["num_attention_heads"], qwen15["num_key_value_heads"], qwen15["max_window_layers"]) == (12, 2, 21)
    qwen3b = MODELS.get("qwen2.5-3b").arch
    assert (qwen3b["hidden_size"], qwen3b["intermediate_size"], qwen3b["num_hidden_layers"]) == (2048, 11008, 36)
    phi2 = MODELS.get("phi-2").arch
    assert (phi2["vocab_size"], phi2["hidden_size"], phi2["partial_rotary_factor"]) == (51200, 2560, 0.4)
    phi3 = MODELS.get("phi-3-mini").arch
    assert (phi3["vocab_size"], phi3["hidden_size"], phi3["intermediate_size"]) == (32064, 3072, 8192)


def test_describe_model_counts_tied_weights_once():
    untied, _ = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))
    tied, _ = load_model_and_tokenizer(ModelConfig(name="tiny-llama", overrides={"tie_word_embeddings": True}))
    head = untied.get_output_embeddings().weight.numel()
    assert describe_model(untied)["total_params"] == sum(p.numel() for p in untied.parameters())
    assert describe_model(tied)["total_params"] == describe_model(untied)["total_params"] - head
    info = describe_model(untied)
    assert info["trainable_params"] == info["total_params"] and info["trainable_percent"] == 100.0


def test_describe_model_with_peft_adapter():
    from peft import LoraConfig, get_peft_model

    model, _ = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))
    total = describe_model(model)["total_params"]
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    info = describe_model(peft_model)
    assert info["trainable_params"] == lora > 0
    assert info["total_params"] == total + lora
    assert info["trainable_percent"] == pytest.approx(100.0 * lora / (total + lora))
