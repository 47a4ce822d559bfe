"""Attention implementations a run can ask for (``model.attn_implementation``), each checked against the device,
dtype and installed packages before anything is recorded, and how packed SFT rows keep their examples apart.

Packing (`oneml.data.packing`) puts several examples in one row with position ids restarting at 0 and no
attention mask. What keeps an example from attending to the one before it depends on the implementation:

- ``mask`` (eager, sdpa, flex_attention): transformers turns the restarting position ids into a block-diagonal
  causal mask (``masking_utils.find_packed_sequence_indices``; a BlockMask for flex, which then skips the
  blocks between examples), at any batch size.
- ``varlen`` (flash_attention_2, flash_attention_3, a hub flash kernel ``org/name``): no mask; the
  variable-length kernel is told where each example starts by cumulative lengths (``cu_seq_lens_q/k``,
  ``max_length_q/k``). transformers derives them from position ids only at batch size 1, so the packed collator
  computes them on the CPU for every batch and passes them explicitly (`oneml.data.packing.takes_varlen`,
  `varlen_kwargs`), and the packing probe checks that layout at batch > 1.

``auto`` leaves the choice to transformers (sdpa for the architectures oneml ships) and keeps the run ids of
configs written before this key existed. Nothing is chosen for speed here without a measurement on the device:
flash or flex must be asked for by name (BENCHMARKS.md, GPU section).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oneml.errors import OnemlError
from oneml.registry import Registry

AUTO = "auto"
HUB_KERNEL = re.compile(r"[\w.-]+/[\w.-]+(:[\w.-]+)?")
"""A hub kernel repository as transformers takes it, e.g. kernels-community/flash-attn3 (varlen, CUDA only)."""


@dataclass(frozen=True)
class Attention:
    unavailable: Callable[[str, Any], str | None]
    """(device type, dtype) -> why it cannot train here, or None."""


def _half_precision(dtype: Any) -> str | None:
    import torch

    if dtype not in (torch.bfloat16, torch.float16):
        return f"runs in bfloat16 or float16 only, the model is {str(dtype).replace('torch.', '')} (set model.dtype)"
    return None


def _needs_cuda(device: str) -> str | None:
    return None if device == "cuda" else "needs a CUDA device"


def _module(name: str, package: str) -> str | None:
    return None if importlib.util.find_spec(name) is not None else f"needs the {package} package, not installed"


def _flex(device: str, dtype: Any) -> str | None:
    import torch

    if not hasattr(torch.nn.attention, "flex_attention"):
        return f"needs torch >= 2.5 (torch.nn.attention.flex_attention), this is {torch.__version__}"
    if device == "cpu":  # torch's FlexAttention raises at the first backward on CPU (it has a forward only)
        return f"has no backward pass on CPU in torch {torch.__version__} (training needs a CUDA device)"
    return None


def _hopper(device: str, dtype: Any) -> str | None:
    import torch

    if (reason := _needs_cuda(device)) is not None:
        return reason
    major, minor = torch.cuda.get_device_capability()
    return None if major >= 9 else f"needs a Hopper GPU or newer (compute capability 9.0), this one is {major}.{minor}"


def _first(*checks: Callable[[], str | None]) -> str | None:
    return next((reason for check in checks if (reason := check()) is not None), None)


ATTENTION: Registry[Attention] = Registry("attention implementation")
ATTENTION.register("eager", Attention(lambda device, dtype: None), "transformers' plain matmul attention")
ATTENTION.register("sdpa", Attention(lambda device, dtype: None), "torch scaled_dot_product_attention")
ATTENTION.register("flex_attention", Attention(_flex), "torch FlexAttention with a block mask (CUDA)")
ATTENTION.register(
    "flash_attention_2",
    Attention(
        lambda device, dtype: _first(
            lambda: _needs_cuda(device), lambda: _module("flash_attn", "flash-attn"), lambda: _half_precision(dtype)
        ),
    ),
    "FlashAttention-2 varlen kernels (flash-attn package, CUDA, bf16/fp16)",
)
ATTENTION.register(
    "flash_attention_3",
    Attention(
        lambda device, dtype: _first(
            lambda: _hopper(device, dtype),
            lambda: _module("flash_attn_interface", "FlashAttention-3 (flash_attn_interface)"),
            lambda: _half_precision(dtype),
        ),
    ),
    "FlashAttention-3 varlen kernels (flash_attn_interface, Hopper, bf16/fp16)",
)
HUB = Attention(
    lambda device, dtype: _first(
        lambda: _needs_cuda(device), lambda: _module("kernels", "kernels"), lambda: _half_precision(dtype)
    ),
)
"""A hub kernel (``org/name``): transformers loads it through the kernels package (a flash kernel takes the packed
rows' cumulative lengths: `oneml.data.packing.takes_varlen`)."""


def choices() -> list[str]:
    return [AUTO, *ATTENTION.names()]


def check_name(value: str) -> str:
    """The config's validation: a known implementation, auto, or a hub kernel id."""
    if value in ATTENTION or value == AUTO or HUB_KERNEL.fullmatch(value):
        return value
    raise ValueError(f"must be one of {', '.join(choices())} or a hub kernel (org/name), got {value!r}")


def entry(name: str) -> Attention | None:
    """The implementation's entry; None for auto."""
    if name == AUTO:
        return None
    return ATTENTION.get(name) if name in ATTENTION else HUB


def unavailable(name: str, device: str, dtype: Any) -> str | None:
    """Why ``name`` cannot train on this device type in this dtype with the installed packages, or None."""
    found = entry(name)
    return None if found is None else found.unavailable(device, dtype)


def apply(model: Any, name: str, device: str) -> None:
    """Switch ``model`` (a transformers model, before the method wraps it) to ``name``; one-line errors."""
    if name == AUTO:
        return
    dtype = next(model.parameters()).dtype
    reason = unavailable(name, device, dtype)
    if reason is not None:
        raise OnemlError(f"model.attn_implementation: {name} {reason}")
    try:
        model.set_attn_implementation(name)
    except (ImportError, ValueError, OSError) as err:  # a hub kernel that cannot be fetched, an architecture without
        first = " ".join(str(err).split())[:300]
        raise OnemlError(f"model.attn_implementation: {name}: {first}") from None


def in_use(model: Any) -> str:
    """The implementation the model's attention layers run (what the run records)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return str(getattr(inner.config, "_attn_implementation", None) or "eager")
