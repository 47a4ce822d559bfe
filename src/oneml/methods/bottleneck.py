"""Bottleneck adapters (Houlsby et al. 2019, https://arxiv.org/abs/1902.00751; Pfeiffer et al. 2020,
https://arxiv.org/abs/2005.00247).

A small residual MLP adapts the output h (d) of a transformer sub-block before it joins the residual stream:

    A(h) = h + W_up f(W_down h + b_down) + b_up,   W_down (b x d), W_up (d x b),  b = d // reduction_factor

houlsby puts one after the attention block and one after the MLP block of every layer (2 per layer); pfeiffer only
after the MLP block (1 per layer), which Pfeiffer et al. found as good at half the parameters. Each adapter has
2 d b + b + d parameters. W_up and b_up start at zero (AdapterHub's "mam_adapter" init; W_down Kaiming-uniform), so
the adapted model starts exactly as the base. Only the adapters train: Houlsby et al. also tune the layer norms, but
keeping them frozen leaves the base untouched and the adapter file self-contained.

The AdapterHub `adapters` package pins transformers 4.x, so this is our own. Each adapter is a child
(``bottleneck_adapter``) of the module it follows, applied by a forward hook: the model stays a transformers model
with its parameter names unchanged, so generation, TRL's fused LM head and gradient checkpointing work as before.
Not mergeable: f is non-linear.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import PositiveInt
from torch import nn

from oneml.errors import OnemlError
from oneml.methods import METHODS, MethodConfig, MethodContext

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
PLACEMENTS: dict[str, tuple[str, ...]] = {"houlsby": ("attention", "mlp"), "pfeiffer": ("mlp",)}
LAYOUTS: tuple[dict[str, str], ...] = (
    {"attention": "self_attn", "mlp": "mlp"},  # Llama, Qwen2, Mistral, Gemma, Phi
    {"attention": "self_attention", "mlp": "mlp"},  # Falcon, Bloom
    {"attention": "attn", "mlp": "mlp"},  # GPT-2, GPT-J
    {"attention": "attention", "mlp": "mlp"},  # GPT-NeoX, Pythia
)
"""Attribute names of the attention and MLP blocks of a decoder layer, per model family."""
ADAPTER = "bottleneck_adapter"
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "bottleneck_config.json"


class BottleneckConfig(MethodConfig):
    name: Literal["bottleneck"] = "bottleneck"
    complexity: ClassVar[tuple[float, str]] = (
        10,
        "new modules in every block: inference code must carry them, no merge",
    )
    mergeable: ClassVar[bool] = False
    placement: Literal[tuple(PLACEMENTS)] = "pfeiffer"  # type: ignore[valid-type]
    """houlsby: adapters after attention and after the MLP; pfeiffer: after the MLP only."""
    reduction_factor: PositiveInt = 16
    """Bottleneck width = hidden size // reduction_factor."""
    non_linearity: Literal[tuple(ACTIVATIONS)] = "relu"  # type: ignore[valid-type]
    """f between the down- and up-projection."""

    def apply(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        return apply(model, self, ctx)

    def frozen_copy_refusal(self) -> str | None:
        return "adds its own modules, not a peft adapter, and TRL copies peft adapters only"

    def sharding_refusal(self) -> str | None:
        return (
            "save method bottleneck from the Trainer's gathered state dict: it needs its own save step, which needs "
            "the whole model in one process; use strategy ddp"
        )

    def save(self, model: torch.nn.Module, path: Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if f".{ADAPTER}." in k}
        save_file(state, str(path / WEIGHTS_FILE))
        meta = {"method": self.model_dump(), "model_type": model.config.model_type, "adapters": len(adapters(model))}
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2))

    def load(self, base: torch.nn.Module, path: Path) -> torch.nn.Module:
        from safetensors.torch import load_file

        path = Path(path)
        meta = json.loads((path / CONFIG_FILE).read_text())
        model = apply(base, BottleneckConfig.model_validate(meta["method"]), MethodContext())
        missing, unexpected = model.load_state_dict(load_file(str(path / WEIGHTS_FILE)), strict=False)
        missing = [k for k in missing if f".{ADAPTER}." in k]
        if missing or unexpected:
            raise OnemlError(
                f"{path}: adapter does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        return model

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        raise OnemlError(
            "method bottleneck: adapters cannot be merged into the base weights (h + W_up f(W_down h) is non-linear "
            "in h); load the base model and the adapter instead"
        )


class BottleneckAdapter(nn.Module):
    """A(h) = h + up(f(down(h))); the identity at init."""

    def __init__(self, hidden: int, bottleneck: int, non_linearity: str):
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        # The adapter keeps float32 weights under a half-precision base; the residual stays in the base's dtype.
        delta = self.up(self.act(self.down(h.to(self.down.weight.dtype))))
        return h + delta.to(h.dtype)


def _adapt_output(module: nn.Module, args, output):
    """Forward hook: the block's output (the first element of a tuple, as attention returns) through its adapter."""
    adapter = getattr(module, ADAPTER)
    if isinstance(output, tuple):
        return (adapter(output[0]), *output[1:])
    return adapter(output)


def decoder_blocks(model: nn.Module) -> list[dict[str, nn.Module]]:
    """{"attention": module, "mlp": module} for every decoder layer, found by the LAYOUTS attribute names."""
    get_decoder = getattr(model, "get_decoder", None)
    root = get_decoder() if callable(get_decoder) else None
    root = model if root is None else root
    for layout in LAYOUTS:
        blocks = [
            {role: getattr(m, attr) for role, attr in layout.items()}
            for m in root.modules()
            if all(isinstance(getattr(m, attr, None), nn.Module) for attr in layout.values())
        ]
        if blocks:
            return blocks
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    known = ", ".join("/".join(layout.values()) for layout in LAYOUTS)
    raise OnemlError(
        f"method bottleneck: cannot find the attention and MLP blocks of model type {model_type!r} ({known})"
    )


def adapters(model: nn.Module) -> list[BottleneckAdapter]:
    return [m for m in model.modules() if isinstance(m, BottleneckAdapter)]


def apply(model: torch.nn.Module, cfg: BottleneckConfig, ctx: MethodContext) -> torch.nn.Module:
    if adapters(model):
        raise OnemlError("method bottleneck: this model already has bottleneck adapters")
    blocks = decoder_blocks(model)
    hidden = model.config.get_text_config().hidden_size
    width = hidden // cfg.reduction_factor
    if width < 1:
        raise OnemlError(
            f"method.reduction_factor: must be at most the hidden size ({hidden}), got {cfg.reduction_factor}"
        )
    model.requires_grad_(False)
    for block in blocks:
        for role in PLACEMENTS[cfg.placement]:
            target = block[role]
            device = next(target.parameters()).device
            target.add_module(ADAPTER, BottleneckAdapter(hidden, width, cfg.non_linearity).to(device))
            target.register_forward_hook(_adapt_output)
    return model


METHODS.register(
    "bottleneck", BottleneckConfig, "Bottleneck adapters (Houlsby/Pfeiffer): residual MLPs after attention and/or MLP"
)
