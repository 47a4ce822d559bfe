"""Loading: name resolution, one-line errors, seeded random init, dtypes, local directories, tokenizer choice."""

from __future__ import annotations

import json

import pytest
import torch

from oneml.config import ModelConfig
from oneml.errors import OnemlError
from oneml.models import load_model_and_tokenizer, load_tokenizer, resolve_dtype


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- random init ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2"])
def test_seeded_random_init_is_reproducible(name):
    first = _weights(load_model_and_tokenizer(ModelConfig(name=name), seed=0)[0])
    again = _weights(load_model_and_tokenizer(ModelConfig(name=name), seed=0)[0])
    other = _weights(load_model_and_tokenizer(ModelConfig(name=name), seed=1)[0])
    assert _same(first, again)
    assert not _same(first, other)
    proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(first[proj], other[proj])


def test_random_init_leaves_global_rng_alone():
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    load_model_and_tokenizer(ModelConfig(name="tiny-llama"), seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_override_key_is_refused():
    with pytest.raises(OnemlError, match=r"model.overrides: 'num_hiden_layers' .*did you mean 'num_hidden_layers'"):
        load_model_and_tokenizer(ModelConfig(name="tiny-llama", overrides={"num_hiden_layers": 1}))


def test_invalid_override_value_is_one_line():
    with pytest.raises(OnemlError, match=r"^model.overrides: ") as info:
        load_model_and_tokenizer(ModelConfig(name="tiny-llama", overrides={"num_attention_heads": 3}))
    assert "\n" not in str(info.value)


def test_tokenizer_larger_than_vocab_is_refused():
    with pytest.raises(OnemlError, match=r"model.tokenizer: the tokenizer has 259 tokens but .* has 100"):
        load_model_and_tokenizer(ModelConfig(name="tiny-llama", overrides={"vocab_size": 100}))


# --- dtype ----------------------------------------------------------------------------------------------------------


def test_dtype_auto_is_float32_on_cpu_and_explicit_is_honoured():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("float16", "cpu") == torch.float16
    model, _ = load_model_and_tokenizer(ModelConfig(name="tiny-qwen2"))
    assert model.dtype == torch.float32
    model, _ = load_model_and_tokenizer(ModelConfig(name="tiny-qwen2", dtype="bfloat16"))
    assert model.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


@pytest.mark.gpu
def test_dtype_auto_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model, _ = load_model_and_tokenizer(ModelConfig(name="tiny-llama"), device="cuda")
    assert model.device.type == "cuda"
    assert model.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)


# --- names and errors -----------------------------------------------------------------------------------------------


def test_unknown_name_suggests_a_preset():
    with pytest.raises(OnemlError) as info:
        load_model_and_tokenizer(ModelConfig(name="tiny-lama"))
    message = str(info.value)
    assert message.startswith("model.name: unknown model 'tiny-lama' (did you mean 'tiny-llama'?)")
    assert "known presets: smollm2-135m, tiny-llama" in message
    assert "hub id (org/name) or a local directory" in message


def test_missing_local_directory(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(OnemlError, match=r"^model.name: directory '.*no-such-model' not found$"):
        load_model_and_tokenizer(ModelConfig(name=str(missing)))
    with pytest.raises(OnemlError, match=r"^model.name: directory './nope' not found$"):
        load_model_and_tokenizer(ModelConfig(name="./nope"))


def test_directory_without_config_names_it(tmp_path):
    (tmp_path / "weights.txt").write_text("not a model")
    with pytest.raises(OnemlError, match=rf"^model.name: directory '{tmp_path}' has no config.json"):
        load_model_and_tokenizer(ModelConfig(name=str(tmp_path)))


def test_hub_failure_is_one_line():
    # conftest sets HF_HUB_OFFLINE=1, so the hub is unreachable and nothing is cached.
    with pytest.raises(OnemlError) as info:
        load_model_and_tokenizer(ModelConfig(name="no-such-org/no-such-model"))
    message = str(info.value)
    assert message.startswith("model.name: could not load 'no-such-org/no-such-model' from the Hugging Face hub: ")
    assert "\n" not in message


def test_architecture_preset_pretrained_goes_to_its_hub_id():
    with pytest.raises(OnemlError, match=r"could not load 'Qwen/Qwen2.5-0.5B-Instruct' from the Hugging Face hub"):
        load_model_and_tokenizer(ModelConfig(name="qwen2.5-0.5b"))


def test_overrides_need_random_init():
    cfg = ModelConfig(name="qwen2.5-0.5b", overrides={"num_hidden_layers": 1})
    with pytest.raises(OnemlError, match=r"^model.overrides: only allowed with init: random or tiny presets$"):
        load_model_and_tokenizer(cfg)
    with pytest.raises(OnemlError, match=r"^model.overrides: only allowed"):
        load_model_and_tokenizer(ModelConfig(name="smollm2-135m", overrides={"num_hidden_layers": 1}))


def test_revision_only_for_hub_models():
    with pytest.raises(OnemlError, match=r"^model.revision: applies to hub models only"):
        load_model_and_tokenizer(ModelConfig(name="tiny-llama", revision="main"))


def test_unknown_tokenizer_suggests():
    with pytest.raises(OnemlError, match=r"^model.tokenizer: unknown tokenizer 'bytes' \(did you mean 'byte'\?\)"):
        load_model_and_tokenizer(ModelConfig(name="tiny-llama", tokenizer="bytes"))


# --- local directories ----------------------------------------------------------------------------------------------


def test_local_directory_round_trip(tmp_path):
    model, tokenizer = load_model_and_tokenizer(ModelConfig(name="tiny-qwen2"), seed=3)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model_and_tokenizer(ModelConfig(name=str(tmp_path)))
    assert type(loaded) is type(model)
    assert _same(_weights(model), _weights(loaded))
    assert loaded_tok("héllo").input_ids == tokenizer("héllo").input_ids
    assert loaded_tok.chat_template == tokenizer.chat_template


def test_local_directory_random_init_uses_its_config(tmp_path):
    model, tokenizer = load_model_and_tokenizer(ModelConfig(name="tiny-llama"), seed=3)
    model.save_pretrained(tmp_path)
    cfg = ModelConfig(name=str(tmp_path), init="random", overrides={"num_hidden_layers": 1})
    fresh, _ = load_model_and_tokenizer(cfg, seed=4)
    assert fresh.config.num_hidden_layers == 1 and fresh.config.hidden_size == 64
    assert not torch.equal(fresh.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_pickle_weights_are_never_loaded(tmp_path):
    model, _ = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OnemlError, match=rf"^model.name: could not load the directory '{tmp_path}': "):
        load_model_and_tokenizer(ModelConfig(name=str(tmp_path)))
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llama"


# --- tokenizer choice -----------------------------------------------------------------------------------------------


def test_tokenizer_byte_and_pad_fallback(tmp_path):
    tok = load_tokenizer("byte")
    assert len(tok) == 259 and tok.eos_token == "<|im_end|>"
    # A tokenizer without a pad token gets its eos token as pad.
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    model, _ = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))
    model.save_pretrained(tmp_path)
    _, loaded_tok = load_model_and_tokenizer(ModelConfig(name=str(tmp_path)))
    assert loaded_tok.pad_token == loaded_tok.eos_token == "<|im_end|>"


def test_tokenizer_from_local_directory(tmp_path):
    load_tokenizer("byte").save_pretrained(tmp_path)
    model, tokenizer = load_model_and_tokenizer(ModelConfig(name="tiny-llama", tokenizer=str(tmp_path)))
    assert len(tokenizer) == 259 and model.config.vocab_size == 259


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_dtype_auto_takes_bfloat16_only_where_the_gpu_computes_it_natively(monkeypatch, native, expected):
    """is_bf16_supported() counts emulation by default (pre-Ampere GPUs), where bfloat16 runs slower than float32."""
    from oneml.models.loading import resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    assert resolve_dtype("auto", "cuda") == expected
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("float16", "cpu") == torch.float16
