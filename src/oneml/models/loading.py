"""Turn a ``ModelConfig`` into a (model, tokenizer) pair.

``model.name`` is resolved in this order: a catalogue preset, an existing local directory, a hub id (``org/name``).
Weights are read from safetensors only, never from pickle files. ``init: random`` (and every tiny preset) builds the
architecture with seeded random weights and needs no network; its tokenizer is the offline byte tokenizer unless
``model.tokenizer`` names another.

transformers is imported inside functions so that importing ``oneml.models`` (the CLI listing presets, say) stays
cheap.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneml.errors import OnemlError, did_you_mean
from oneml.models.catalogue import MODELS, ModelPreset
from oneml.models.embedded import ensure_embedded
from oneml.models.tokenizer import byte_tokenizer

if TYPE_CHECKING:
    import torch

    from oneml.config import ModelConfig

BYTE_TOKENIZER = "byte"
_HUB_ID = re.compile(r"\w[\w.-]*/\w[\w.-]*")
"""org/name as the hub spells it; a leading '.' or '/' or a second '/' makes it a path instead."""

Location = Path | str
"""Where pretrained files come from: a local directory (Path) or a hub id (str)."""


def load_model_and_tokenizer(cfg: ModelConfig, *, device: str = "cpu", seed: int = 0) -> tuple[Any, Any]:
    """Load (or build) the model and tokenizer ``cfg`` describes, on ``device``, in eval mode.

    ``seed`` only matters for random init: the same seed gives the same weights, and the caller's global RNG
    state is left untouched.
    """
    device = _resolve_device(device)
    dtype = resolve_dtype(cfg.dtype, device)
    preset = MODELS.get(cfg.name) if cfg.name in MODELS else None
    random_init = cfg.init == "random" or (preset is not None and preset.kind == "tiny")
    if cfg.overrides and not random_init:
        raise OnemlError("model.overrides: only allowed with init: random or tiny presets")
    if cfg.revision is not None and preset is not None and preset.kind != "architecture":
        raise OnemlError(f"model.revision: applies to hub models only; {preset.name} is a {preset.kind} preset")

    # The tokenizer comes first: a wrong tokenizer name should fail before seconds of model loading.
    own_tokenizer = not random_init and cfg.tokenizer is None
    if random_init:
        tokenizer = _with_pad(load_tokenizer(cfg.tokenizer or BYTE_TOKENIZER))
        source = preset or _checked_model_dir(locate(cfg.name, "model.name", MODELS.names()))
        model = build_random_model(source, tokenizer, cfg.overrides, dtype=dtype, seed=seed, revision=cfg.revision)
    else:
        where = _pretrained_location(cfg, preset)
        tokenizer = _with_pad(_pretrained_tokenizer(where, cfg) if own_tokenizer else load_tokenizer(cfg.tokenizer))
        model = _pretrained_model(where, cfg, dtype)
        if not own_tokenizer:
            _check_vocab(len(tokenizer), model.get_input_embeddings().num_embeddings)
            _align_special_tokens(model, tokenizer)
    return model.to(device).eval(), tokenizer


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """``auto`` = bfloat16 on a CUDA device that computes it natively (Ampere and later), float32 otherwise; other
    names are taken literally. Emulated bfloat16 (which ``is_bf16_supported`` counts by default on older GPUs) runs
    slower than float32, so it is not chosen."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if str(device).startswith("cuda") and torch.cuda.is_available() and _native_bf16():
        return torch.bfloat16
    return torch.float32


def _native_bf16() -> bool:
    import torch

    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before 2.3 has no such argument and counted native support only
        return torch.cuda.is_bf16_supported()


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --- names -> places ----------------------------------------------------------------------------------------------


def locate(name: str, field: str, known: list[str], noun: str = "model") -> Location:
    """An existing local directory or a hub id; anything else is a one-line error naming ``field``."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if _HUB_ID.fullmatch(name):
        return name
    if name.startswith((".", "/", "~")) or "/" in name or "\\" in name:
        raise OnemlError(f"{field}: directory {name!r} not found")
    raise OnemlError(
        f"{field}: unknown {noun} {name!r}{did_you_mean(name, known)}; known presets: {', '.join(known)}; "
        "or give a hub id (org/name) or a local directory"
    )


def _pretrained_location(cfg: ModelConfig, preset: ModelPreset | None) -> Location:
    if preset is None:
        return _checked_model_dir(locate(cfg.name, "model.name", MODELS.names()))
    if preset.kind == "embedded":
        return ensure_embedded()
    return preset.hub_id


def _checked_model_dir(where: Location) -> Location:
    if isinstance(where, Path) and not (where / "config.json").is_file():
        raise OnemlError(
            f"model.name: directory {str(where)!r} has no config.json; "
            "give a folder written by save_pretrained (config.json + *.safetensors)"
        )
    return where


@contextlib.contextmanager
def _load_errors(where: Location, field: str = "model.name") -> Iterator[None]:
    """One-line errors for the ways loading fails: offline, not found, gated, no safetensors, unknown architecture."""
    try:
        yield
    except OnemlError:
        raise
    except (OSError, ValueError) as err:
        reason = _one_line(err)
        origin = f"the directory {str(where)!r}" if isinstance(where, Path) else f"{where!r} from the Hugging Face hub"
        raise OnemlError(f"{field}: could not load {origin}: {reason}") from None


def _one_line(err: BaseException) -> str:
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _strict_dataclass_error() -> type[Exception]:
    """transformers 5 configs are huggingface_hub strict dataclasses, whose validation errors are no ValueError."""
    from huggingface_hub import errors

    return getattr(errors, "StrictDataclassError", ValueError)


def _hub_kwargs(where: Location, cfg: ModelConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if not isinstance(where, Path) and cfg.revision is not None:
        kwargs["revision"] = cfg.revision
    return kwargs


# --- pretrained ---------------------------------------------------------------------------------------------------


def _pretrained_model(where: Location, cfg: ModelConfig, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    with _load_errors(where):
        return AutoModelForCausalLM.from_pretrained(
            str(where), dtype=dtype, use_safetensors=True, **_hub_kwargs(where, cfg)
        )


def _pretrained_tokenizer(where: Location, cfg: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    with _load_errors(where):
        return AutoTokenizer.from_pretrained(str(where), **_hub_kwargs(where, cfg))


# --- tokenizers ---------------------------------------------------------------------------------------------------

_PRESET_TOKENIZERS: dict[str, Callable[[ModelPreset], Any]] = {
    "embedded": lambda preset: _auto_tokenizer(ensure_embedded(), "model.tokenizer"),
    "tiny": lambda preset: byte_tokenizer(),
    "architecture": lambda preset: _auto_tokenizer(preset.hub_id, "model.tokenizer"),
}
"""A preset's own tokenizer, by preset kind."""


def tokenizer_names() -> list[str]:
    """The names ``model.tokenizer`` accepts besides hub ids and directories."""
    return [BYTE_TOKENIZER, *MODELS.names()]


def load_tokenizer(name: str) -> Any:
    """``byte``, a preset's tokenizer (``smollm2-135m`` gives the embedded one), a local directory or a hub id."""
    if name == BYTE_TOKENIZER:
        return byte_tokenizer()
    if name in MODELS:
        preset = MODELS.get(name)
        return _PRESET_TOKENIZERS[preset.kind](preset)
    return _auto_tokenizer(locate(name, "model.tokenizer", tokenizer_names(), "tokenizer"), "model.tokenizer")


def _auto_tokenizer(where: Location, field: str) -> Any:
    from transformers import AutoTokenizer

    with _load_errors(where, field):
        return AutoTokenizer.from_pretrained(str(where))


def _check_vocab(tokens: int, rows: int) -> None:
    if tokens > rows:
        raise OnemlError(f"model.tokenizer: the tokenizer has {tokens} tokens but the model's vocabulary has {rows}")


def _with_pad(tokenizer: Any) -> Any:
    # Batching needs a pad token; eos is the usual stand-in, and the loss masks padding anyway.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _special_token_ids(tokenizer: Any) -> dict[str, Any]:
    return {attr: getattr(tokenizer, attr, None) for attr in ("bos_token_id", "eos_token_id", "pad_token_id")}


def _align_special_tokens(model: Any, tokenizer: Any) -> None:
    """Point the model's bos/eos/pad ids at the tokenizer's, so generation stops where this tokenizer ends a turn."""
    for attr, value in _special_token_ids(tokenizer).items():
        setattr(model.config, attr, value)
        if getattr(model, "generation_config", None) is not None:
            setattr(model.generation_config, attr, value)


# --- random init --------------------------------------------------------------------------------------------------


def build_random_model(
    source: ModelPreset | Location,
    tokenizer: Any,
    overrides: dict[str, Any] | None = None,
    *,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    revision: str | None = None,
) -> Any:
    """The architecture of ``source`` (plus ``overrides``) with random weights drawn from ``seed``.

    A tiny preset leaves ``vocab_size`` out of its architecture; it becomes the tokenizer's size.
    """
    import torch
    from transformers import AutoModelForCausalLM

    # The tokenizer defines the special ids of a random model; the architecture's own ids mean nothing to it.
    ids = _special_token_ids(tokenizer)
    config = architecture_config(source, overrides or {}, vocab_size=len(tokenizer), revision=revision, token_ids=ids)
    _check_vocab(len(tokenizer), config.vocab_size)  # before spending seconds on a large random init
    # fork_rng: the seed fixes these weights without resetting the caller's RNG stream (data order, dropout).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    _align_special_tokens(model, tokenizer)
    return model


def architecture_config(
    source: ModelPreset | Location,
    overrides: dict[str, Any],
    *,
    vocab_size: int,
    revision: str | None = None,
    token_ids: dict[str, Any] | None = None,
) -> Any:
    """A transformers config for ``source`` with ``overrides`` applied; unknown override keys are refused.

    ``vocab_size`` is used only where the architecture leaves it open (tiny presets); ``token_ids`` replace the
    architecture's bos/eos/pad ids, and ``overrides`` win over both.
    """
    from transformers import AutoConfig, PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if isinstance(source, ModelPreset):
        arch = copy.deepcopy(dict(source.arch))  # transformers edits nested dicts (rope_scaling) in place
    else:
        with _load_errors(source):
            extra = {"revision": revision} if revision is not None and not isinstance(source, Path) else {}
            arch, _ = PretrainedConfig.get_config_dict(str(source), **extra)
    arch.setdefault("vocab_size", vocab_size)
    model_type = arch.pop("model_type", None)
    if model_type not in CONFIG_MAPPING:
        raise OnemlError(f"model.name: architecture {model_type!r} is not one transformers can build")
    fields = set(CONFIG_MAPPING[model_type]().to_dict()) | set(arch)
    for key in overrides:
        if key not in fields:
            raise OnemlError(
                f"model.overrides: {key!r} is not a {model_type} config field{did_you_mean(key, sorted(fields))}"
            )
    # A saved per-layer list (layer_types) would contradict a new layer count; let the config derive it again.
    if "num_hidden_layers" in overrides and "layer_types" not in overrides:
        arch.pop("layer_types", None)
    try:
        return AutoConfig.for_model(model_type, **{**arch, **(token_ids or {}), **overrides})
    except (ValueError, TypeError, _strict_dataclass_error()) as err:
        # The config's own validation (heads that do not divide hidden_size, a string for an int) wraps the
        # informative error; show that one.
        raise OnemlError(f"model.overrides: {_one_line(err.__cause__ or err)}") from None


# --- reporting ----------------------------------------------------------------------------------------------------


def describe_model(model: Any) -> dict[str, Any]:
    """Total and trainable parameter counts; shared (tied) tensors count once, 4-bit packed ones at full size."""
    total = trainable = 0
    seen: set[Any] = set()
    for param in model.parameters():
        key = param.data_ptr() if param.device.type != "meta" and param.data_ptr() else id(param)
        if key in seen:
            continue
        seen.add(key)
        # bitsandbytes packs two 4-bit values per byte; quant_state keeps the logical shape.
        quant_state = getattr(param, "quant_state", None)
        count = math.prod(quant_state.shape) if quant_state is not None else param.numel()
        total += count
        trainable += count if param.requires_grad else 0
    return {
        "total_params": total,
        "trainable_params": trainable,
        "trainable_percent": 100.0 * trainable / total if total else 0.0,
    }
