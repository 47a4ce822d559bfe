"""Models: the catalogue of presets (embedded default, tiny test models, real architectures) and loading.

Importing this package is cheap: torch and transformers are imported only when a model is loaded or built.
"""

from __future__ import annotations

from oneml.models.catalogue import MODELS, ModelPreset
from oneml.models.embedded import ensure_embedded
from oneml.models.loading import (
    build_random_model,
    describe_model,
    load_model_and_tokenizer,
    load_tokenizer,
    resolve_dtype,
    tokenizer_names,
)
from oneml.models.tokenizer import byte_tokenizer

__all__ = [
    "MODELS",
    "ModelPreset",
    "build_random_model",
    "byte_tokenizer",
    "describe_model",
    "ensure_embedded",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "resolve_dtype",
    "tokenizer_names",
]
