"""Lean activations: tensors that autograd would store for the backward pass, kept as a recipe instead.

Two kinds of activations in a LoRA step are cheap to rebuild exactly from tensors that live anyway, yet
autograd stores them in full:

- LoRA's dropout. On CPU, ``F.dropout`` draws a float32 noise tensor (0 or 1/(1-p)) and stores it for the
  backward of ``x * noise``, and ``lora_A`` stores the dropped input ``x * noise`` for its weight gradient:
  two copies of x's size per adapted layer (q, k, v and o each have their own), 18 MiB a decoder layer at 4 x 256
  tokens of SmolLM2. Kept instead: x itself (shared by q, k and v) and a one-byte mask per layer.
- The gated MLP's activation. ``down(act(gate(x)) * up(x))`` stores gate(x) for the activation's backward
  and act(gate(x)) for the product's: the second is rebuilt from the first.

Mechanism: ``torch.autograd.graph.saved_tensors_hooks`` around the training forward. Each rebuildable tensor
is registered (by its storage) when it is made; when autograd saves it (or a view of it), the pack hook keeps
the recipe's inputs instead, and the unpack hook reruns the recipe in the backward. The graph, the random
draws and every value are those of the plain computation: the recipes repeat the same elementwise kernels
on the same inputs, so losses and gradients are bitwise identical (tests/models/test_lean.py), for the price
of a few elementwise operations per layer in the backward (the matmuls are not repeated).

Where it is off (recorded with the reason): ``torch.compile`` (the hooks would break its graphs), and where
gradient checkpointing is on, which stores no activations inside its layers anyway (its own hooks are
innermost there, so ours would see nothing).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

ELEMENTWISE = ("SiLUActivation", "SiLU", "GELUActivation", "GELUTanh", "NewGELUActivation", "FastGELUActivation")
"""Activation modules whose output is a deterministic elementwise function of their input: rebuilding the output
from the input reproduces it bit for bit."""


class _Recipe:
    """How to rebuild a saved tensor (or the view of it autograd saved) from tensors that live anyway."""

    __slots__ = ("rebuild", "inputs", "versions", "view")

    def __init__(self, rebuild: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...], view: tuple):
        self.rebuild, self.view = rebuild, view
        self.inputs = tuple(t.detach() for t in inputs)  # detached views share the storage and version counter
        self.versions = tuple(t._version for t in inputs)

    def __call__(self) -> torch.Tensor:
        if any(t._version != v for t, v in zip(self.inputs, self.versions, strict=True)):
            # What autograd itself raises when a tensor it stored was modified in place before the backward.
            raise RuntimeError("lean activations: an input of a stored activation was modified by an inplace operation")
        size, stride, offset = self.view
        return self.rebuild(*self.inputs).as_strided(size, stride, offset)


class Recipes:
    """The tensors of one forward pass that can be rebuilt, by the address of their storage."""

    def __init__(self):
        self._by_address: dict[int, tuple[weakref.ref, int, Callable[..., torch.Tensor], tuple]] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        self.active = False

    def register(self, out: torch.Tensor, rebuild: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> None:
        """``rebuild(*inputs)`` returns a fresh contiguous tensor equal to ``out`` (itself fresh and contiguous)."""
        if self.active:
            self._by_address[out.data_ptr()] = (weakref.ref(out), out._version, rebuild, inputs)

    def pack(self, saved: torch.Tensor) -> Any:
        try:
            entry = self._by_address.get(saved.untyped_storage().data_ptr())
        except (RuntimeError, NotImplementedError):  # no plain storage (a tensor subclass): stored as usual
            entry = None
        # Only a live registered tensor, unmodified since, counts: a freed tensor's address may be reused.
        if entry is None or entry[0]() is None or saved._version != entry[1]:
            return saved.detach()  # detached: a stored output must not hold its own grad_fn (a reference cycle)
        _, _, rebuild, inputs = entry
        return _Recipe(rebuild, inputs, (saved.size(), saved.stride(), saved.storage_offset()))

    @staticmethod
    def unpack(packed: Any) -> torch.Tensor:
        return packed() if isinstance(packed, _Recipe) else packed

    def enter(self, module: nn.Module, args: Any) -> None:
        if module.training and torch.is_grad_enabled() and not self.active:
            self._hooks.__enter__()
            self.active = True

    def exit(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.active:
            self.active = False
            self._by_address.clear()
            self._hooks.__exit__()


class LeanDropout(nn.Dropout):
    """``nn.Dropout`` with the same draws and values, whose noise is stored as a one-byte mask and whose output
    is rebuilt from its input (CPU; elsewhere torch's fused kernel runs, which stores a byte mask itself)."""

    def __init__(self, p: float, recipes: Recipes):
        super().__init__(p)
        self.recipes = recipes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        if not (self.training and self.recipes.active and 0 < p < 1 and x.device.type == "cpu" and x.numel()):
            return super().forward(x)
        # F.dropout's CPU path (ATen's _dropout_impl), op for op: the same random draws and the same values.
        noise = torch.empty_like(x).bernoulli_(1 - p).div_(1 - p)
        mask = noise.bool()
        rebuild_noise = functools.partial(_noise, p=p, dtype=noise.dtype)
        self.recipes.register(noise, rebuild_noise, mask)  # before the product, which stores it
        out = x * noise
        self.recipes.register(out, functools.partial(_dropped, rebuild_noise), x, mask)
        return out


def _noise(mask: torch.Tensor, p: float, dtype: torch.dtype) -> torch.Tensor:
    return mask.to(dtype).div_(1 - p)  # 1.0 / (1 - p) or 0, by the same kernel as the forward's noise


def _dropped(rebuild_noise: Callable[..., torch.Tensor], x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x * rebuild_noise(mask)


class LeanActivation(nn.Module):
    """An elementwise activation whose output, when autograd stores it, is rebuilt from its input."""

    def __init__(self, act: nn.Module, recipes: Recipes):
        super().__init__()
        self.act, self.recipes = act, recipes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(x)
        if self.recipes.active and out.requires_grad:
            self.recipes.register(out, self.act, x)
        return out


def unavailable_reason(config: Any) -> str | None:
    """Why lean activations stay off for this run config (a RunConfig), or None when they apply."""
    if not config.train.lean_activations:
        return "train.lean_activations is false"
    if config.train.gradient_checkpointing:
        return "gradient checkpointing stores no activations inside its layers"
    if config.train.compile:
        return "torch.compile does not trace saved-tensor hooks"
    return None


def apply(model: nn.Module, config: Any) -> str:
    """Install lean activations on ``model`` where ``config`` allows; returns why they are off ("" when on)."""
    reason = unavailable_reason(config)
    if reason is None and not install(model):
        reason = "no LoRA dropout or gated MLP activation to store leaner"
    return reason or ""


def tags(reason: str) -> dict[str, str]:
    """The switch as every run records it (``reason``: why it is off, "" when on)."""
    from oneml.tracking.tags import SWITCH_PREFIX

    out = {f"{SWITCH_PREFIX}lean_activations": "false" if reason else "true"}
    return out | ({f"{SWITCH_PREFIX}lean_activations_off_reason": reason} if reason else {})


def install(model: nn.Module) -> int:
    """Swap LoRA's dropout and gated MLPs' activations for their lean versions and store recipes during every
    training forward of ``model``; returns how many modules were swapped (0: nothing to gain, nothing installed)."""
    recipes = Recipes()
    swapped = 0
    for module in list(model.modules()):
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, nn.ModuleDict):
            for name, drop in dropouts.items():
                if type(drop) is nn.Dropout and 0 < drop.p < 1:
                    dropouts[name] = LeanDropout(drop.p, recipes)
                    swapped += 1
        act = getattr(module, "act_fn", None)
        if hasattr(module, "up_proj") and type(act).__name__ in ELEMENTWISE:
            module.act_fn = LeanActivation(act, recipes)
            swapped += 1
    if swapped:
        model.register_forward_pre_hook(recipes.enter)
        model.register_forward_hook(recipes.exit, always_call=True)
    return swapped
