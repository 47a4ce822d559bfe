"""The run-level speed switches besides packing and the LM head: fused kernels (``train.kernels``), regional
compilation (``train.compile: regional``), the optimizer (``train.optim``) and TF32 (``train.tf32``).

`check` refuses, in one line and before anything is loaded or recorded, a switch this device or package set
cannot honour; the others apply to the model at setup (`apply_kernels` before the method wraps it,
`compile_regions` after). Each is recorded as an ``oneml.switch.*`` tag (train/arguments.py).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oneml.errors import OnemlError
from oneml.registry import Registry


@dataclass(frozen=True)
class Optimizer:
    trainer_name: str | None
    """transformers' ``optim`` name (None: leave transformers' default)."""
    build: Callable[[list[dict[str, Any]], float, float], Any]
    """(parameter groups, learning rate, weight decay) -> optimizer, for methods with their own groups (LoRA+)."""
    needs: Callable[[str], str | None] = lambda device: None


def _adamw(fused: bool | None):
    def build(groups, lr, weight_decay):
        import torch

        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused)

    return build


def _bnb(cls_name: str):
    def build(groups, lr, weight_decay):
        import bitsandbytes as bnb

        return getattr(bnb.optim, cls_name)(groups, lr=lr, weight_decay=weight_decay)

    return build


def _adafactor(groups, lr, weight_decay):
    from transformers.optimization import Adafactor

    # transformers' settings for optim=adafactor: an explicit learning rate, no relative steps
    return Adafactor(groups, lr=lr, weight_decay=weight_decay, scale_parameter=False, relative_step=False)


def _bitsandbytes(device: str) -> str | None:
    return None if importlib.util.find_spec("bitsandbytes") else "needs the bitsandbytes package, not installed"


def _paged(device: str) -> str | None:
    if device != "cuda":  # bitsandbytes falls back to an unpaged optimizer on CPU: the name would not hold
        return "pages optimizer state through CUDA unified memory: needs a CUDA device"
    return _bitsandbytes(device)


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")
OPTIMIZERS.register(
    "auto",
    Optimizer(None, lambda groups, lr, weight_decay: OPTIMIZERS.get(resolve("auto")).build(groups, lr, weight_decay)),
    "transformers' default (adamw_torch_fused on torch >= 2.8)",
)
OPTIMIZERS.register("adamw_torch", Optimizer("adamw_torch", _adamw(False)), "torch AdamW (foreach)")
OPTIMIZERS.register("adamw_torch_fused", Optimizer("adamw_torch_fused", _adamw(True)), "torch AdamW, fused kernel")
OPTIMIZERS.register(
    "adamw_8bit", Optimizer("adamw_bnb_8bit", _bnb("AdamW8bit"), _bitsandbytes), "bitsandbytes 8-bit AdamW"
)
OPTIMIZERS.register(
    "paged_adamw_8bit", Optimizer("paged_adamw_8bit", _bnb("PagedAdamW8bit"), _paged), "bitsandbytes paged 8-bit"
)
OPTIMIZERS.register("adafactor", Optimizer("adafactor", _adafactor), "Adafactor (factored second moments)")


def resolve(name: str) -> str:
    """``auto`` as the optimizer transformers would build by default; any other name as it is.

    A method with its own parameter groups (LoRA+, LISA) builds its optimizer itself, so ``auto`` must name the same
    kind transformers gives every other method (adamw_torch_fused on torch >= 2.8): otherwise LoRA+ trains with a
    different AdamW kernel than the LoRA it is compared with, and the study's speed rows compare kernels.
    """
    if name != "auto":
        return name
    default = _trainer_default()
    named = [key for key in OPTIMIZERS.names() if key != "auto" and OPTIMIZERS.get(key).trainer_name == default]
    return named[0] if named else "adamw_torch"  # a default we do not register: torch's AdamW, as transformers' is


def optimizer_in_use(name: str, method: Any, model: Any, learning_rate: float) -> str:
    """The optimizer a run actually trains with (what the run records)."""
    if method.fixed_optimizer is not None:  # GaLore's, APOLLO's: `check` refuses any other train.optim
        return method.fixed_optimizer
    if name != "auto":
        return name
    if method.builds_optimizer or method.optimizer_groups(model, learning_rate) is not None:
        return resolve(name)  # the method's own groups (LoRA+, LISA): the kind transformers gives the rest
    return _trainer_default()


def _trainer_default() -> str:
    """transformers' default ``optim`` name (adamw_torch_fused on torch >= 2.8)."""
    from transformers import TrainingArguments

    default = TrainingArguments.__dataclass_fields__["optim"].default
    return str(getattr(default, "value", default))  # a str, or an OptimizerNames member in older releases


def build_optimizer(name: str, groups: list[dict[str, Any]], lr: float, weight_decay: float) -> Any:
    """The optimizer for a method's own parameter groups (LoRA+), of the configured kind (auto: transformers')."""
    return OPTIMIZERS.get(name).build(groups, lr, weight_decay)


def _liger(device: str) -> str | None:
    if device != "cuda":
        return "has no CPU backend (Triton kernels): needs a CUDA device"
    if importlib.util.find_spec("liger_kernel") is None:
        return "needs the liger-kernel package (pip install 'oneml[gpu]'), not installed"
    return None


def check(config: Any, device: str) -> None:
    """One-line refusals of the switches this device or package set cannot honour (before anything loads)."""
    t = config.train
    if t.kernels == "liger" and (reason := _liger(device)) is not None:
        raise OnemlError(f"train.kernels: liger {reason}")
    if t.optim != "auto" and (fixed := config.method.fixed_optimizer) is not None:
        raise OnemlError(
            f"train.optim: method {config.method.name} trains with its own optimizer ({fixed}); leave it auto"
        )
    if (reason := OPTIMIZERS.get(t.optim).needs(device)) is not None:
        raise OnemlError(f"train.optim: {t.optim} {reason}")
    if t.tf32 and device != "cuda":
        raise OnemlError("train.tf32: TF32 is a CUDA tensor-core mode; there is no CUDA device here (set it false)")
    if t.tf32 and not _tf32_capable():
        raise OnemlError("train.tf32: needs an Ampere or newer GPU (compute capability 8.0)")


def _tf32_capable() -> bool:
    import torch

    return torch.cuda.get_device_capability()[0] >= 8


def apply_kernels(model: Any, name: str) -> None:
    """Swap fused kernels into ``model`` (a transformers model, before the method wraps its layers)."""
    if name == "none":
        return
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel_to_instance

    kind = model.config.model_type
    if kind not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        raise OnemlError(f"train.kernels: liger has no kernels for {kind} models")
    # Its fused cross-entropy would replace the model's forward, which our head serves: that one is
    # train.chunked_loss: liger instead. Liger patches the architecture's module functions (RoPE) process-wide.
    _apply_liger_kernel_to_instance(
        model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False
    )


def decoder_layers(model: Any) -> list[Any]:
    """The model's repeated decoder blocks (transformers marks them as GradientCheckpointingLayer)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def compile_regions(model: Any) -> int:
    """torch.compile each decoder layer in place (the method's adapters inside it), with dynamic shapes.

    The layers share one code object, so dynamo compiles it once and reuses it for every layer (parameters are
    graph inputs); dynamic shapes mean a new batch or sequence length reuses the graph instead of recompiling,
    which packed batches of varying length would otherwise do at every step. Returns the number of layers.
    """
    layers = decoder_layers(model)
    if not layers:
        raise OnemlError("train.compile: regional found no decoder layers in this model; use true (whole model)")
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
