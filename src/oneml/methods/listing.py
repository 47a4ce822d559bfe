"""What `oneml methods` and the README's method table show, from the registry (a helper, not a method): each
method's trained parameters on the embedded default, what it merges into and where it quantizes, its main keys.

Sorted fewest trained parameters first, counted at each method's defaults on the embedded default model
(SmolLM2-135M): a count on the model users start with, rather than a ratio that depends on the targets.

Counted, not estimated: the method is applied to the model's architecture built on the meta device (shapes only,
no weights: milliseconds even for the full 135M default). Methods whose initialisation reads the weights (PiSSA's
and SORSA's SVD, SHiRA's random mask) cannot run on meta tensors; for them the architecture is built with real
random weights at depth 1 and 2 and a small vocabulary, and the count extrapolated to the real depth: every
decoder layer of these models is the same, so the count is a + b L exactly (a: what is outside the layers).
"""

from __future__ import annotations

import functools
import typing
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from oneml.methods import METHODS, OBJECTIVE_REFUSALS, MethodConfig, MethodContext

DEFAULT_MODEL = "smollm2-135m"
"""The embedded default: the model the counts are for unless a caller names another."""


def trainable(model: torch.nn.Module) -> int:
    """Trainable parameters; a tensor shared by several layers (VB-LoRA's bank, tied weights) counts once."""
    seen: dict[int, int] = {}
    for param in model.parameters():
        if param.requires_grad:
            seen[id(param)] = param.numel()
    return sum(seen.values())


def trainable_on(cfg: MethodConfig, model_name: str = DEFAULT_MODEL) -> int | None:
    """Parameters ``cfg`` trains on ``model_name``'s architecture, or None when it cannot be applied there."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(_architecture(model_name, {}))
    try:
        return trainable(cfg.apply(model, MethodContext(device="cpu")))
    except Exception:  # an init that reads the weights (SVD, masks): count on real ones instead
        pass
    try:
        depth = _architecture(model_name, {}).get_text_config().num_hidden_layers
        one, two = (_counted_with_weights(cfg, model_name, layers) for layers in (1, 2))
    except Exception:  # the method does not fit this architecture at its defaults
        return None
    return one + (depth - 1) * (two - one)


@functools.cache
def default_sizes(model_name: str = DEFAULT_MODEL) -> dict[str, int | None]:
    """Registered method name -> parameters it trains at its defaults on ``model_name``."""
    with warnings.catch_warnings():  # peft warns about CUDA kernels and layer types while applying, for each method
        warnings.simplefilter("ignore")
        return {entry.name: trainable_on(entry.value(), model_name) for entry in METHODS.entries()}


def _architecture(model_name: str, overrides: dict[str, Any]) -> Any:
    from oneml.models import MODELS
    from oneml.models.loading import architecture_config

    preset = MODELS.get(model_name)
    return architecture_config(preset, overrides, vocab_size=preset.arch.get("vocab_size", 256))


def _counted_with_weights(cfg: MethodConfig, model_name: str, layers: int) -> int:
    from transformers import AutoModelForCausalLM

    config = _architecture(model_name, {"num_hidden_layers": layers, "vocab_size": 256})
    with torch.random.fork_rng(devices=[]):  # the listing must not move the caller's random stream
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    return trainable(cfg.apply(model, MethodContext(device="cpu")))


# --- rows -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    what: str
    keys: list[str]
    """Main keys with their choices (``init: kaiming | gaussian``): the fields the method's own class declares."""
    params: int | None
    merges: str
    quantized: str
    rank: float
    why: str


MAX_KEYS = 6
"""Keys shown per method (``oneml keys method`` lists all)."""


def rows(model_name: str = DEFAULT_MODEL) -> list[Row]:
    """One row per registered method, fewest trained parameters first (methods that refuse the model last)."""
    sizes = default_sizes(model_name)
    out = []
    for entry in METHODS.entries():
        cls = entry.value
        rank, why = cls.complexity
        what = entry.description.split(": ", 1)[-1]
        out.append(Row(entry.name, what, main_keys(cls), sizes[entry.name], _merges(cls), _quantized(cls), rank, why))
    return sorted(out, key=lambda r: (r.params is None, r.params or 0))


def main_keys(cls: type[MethodConfig]) -> list[str]:
    """The fields ``cls`` itself declares (a variant shows what it changes), Literal fields with their choices."""
    own = [k for k in cls.__annotations__ if k in cls.model_fields and k != "name"]
    keys = []
    for key in own[:MAX_KEYS]:
        annotation = cls.model_fields[key].annotation
        choices = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()
        keys.append(f"{key}: {' | '.join(map(str, choices))}" if len(choices) > 1 else key)
    return keys


def _merges(cls: type[MethodConfig]) -> str:
    if isinstance(cls.__dict__.get("mergeable"), property):
        return "where peft can"
    if not cls.is_adapter:
        return "(full weights)"
    return "yes" if cls.mergeable else "no"


def _quantized(cls: type[MethodConfig]) -> str:
    field = cls.model_fields.get("quantize")
    if field is None or getattr(cls, "quantize_refusal", None):
        return "no"
    choices = [c for c in typing.get_args(field.annotation) if c != "none"]
    extra = " (bfloat16 model)" if getattr(cls, "quantized_needs_bfloat16", False) else ""
    return " / ".join(choices) + extra


def count(params: int | None) -> str:
    """``1.2k``, ``0.92M``; ``n/a`` for a method that refuses the model."""
    if params is None:
        return "n/a"
    return f"{params / 1e6:.2f}M" if params >= 1e5 else f"{params / 1e3:.1f}k"


def markdown(model_name: str = DEFAULT_MODEL) -> str:
    """The README's method table and the refused (method, objective) pairs (a test holds README.md to it)."""
    lines = [
        f"| `method.name` | what | main keys (`oneml keys method` lists all) | trains on {model_name} | merges "
        "| 4-bit base |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows(model_name):
        keys = ", ".join(f"`{k}`".replace("|", "\\|") for k in r.keys) or "-"
        lines.append(f"| `{r.name}` | {r.what} | {keys} | {count(r.params)} | {r.merges} | {r.quantized} |")
    lines.append("")
    for (method, objective), reason in OBJECTIVE_REFUSALS.items():
        lines.append(f"- `{method}` with `{objective}`: not trainable, {reason}.")
    return "\n".join(lines) + "\n"
