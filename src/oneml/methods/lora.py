"""LoRA: low-rank adaptation (Hu et al. 2021, https://arxiv.org/abs/2106.09685), and the family built on it.

A frozen weight W0 (d_out x d_in) is adapted as

    W = W0 + s * B A,    A: (r x d_in),  B: (d_out x r),  s = alpha / r   (alpha / sqrt(r) with rsLoRA)

rsLoRA (https://arxiv.org/abs/2312.03732) keeps the update's size stable as r grows. The family's variants are
subclasses of `LoRAConfig` that only change defaults (qlora, loraplus, dora, pissa, sorsa); every one of their
switches is a field here, so they combine (PiSSA + DoRA on a 4-bit base with LoRA+ learning rates, say):

- ``init``: how A and B start. ``kaiming`` (peft's default; A Kaiming-uniform, B = 0) and ``gaussian``
  (A ~ N(0, 1/r), B = 0) start from W0 exactly. ``olora`` (https://arxiv.org/abs/2406.01775; W0 = QR,
  B0 = Q[:, :r], A0 = R[:r]) and ``pissa`` (https://arxiv.org/abs/2404.02948; s B0 A0 = the top-r SVD of W0)
  move part of W0 into the adapter and freeze the residual W_res = W0 - s B0 A0 ("mutating" inits), as does
  ``corda`` (the SVD of W0 times the covariance of training inputs). ``eva`` sets A0 from the SVD of training
  activations (B0 = 0), ``orthogonal`` gives B0 A0 = 0 with neither zero, ``loftq`` fits B0 A0 to a quantized base's
  error (inits.py). Their options (``calibration_batches``, ``eva_rho``, ``corda_mode``, ``loftq_iter``) are refused
  with any other init.
- ``rank_pattern``, ``alpha_pattern``, ``layers_to_transform`` (+ ``layers_pattern``): which layers, with which
  r and alpha; ``lora_bias``: a trained bias on B (peft's).
- ``use_dora``: DoRA's magnitude / direction split (dora.py).
- ``loraplus_ratio``: LoRA+'s learning rate for every B, ratio x lr (loraplus.py).
- ``quantize``, ``double_quant``, ``compute_dtype``: QLoRA's quantized frozen base (qlora.py). A mutating init
  runs in full precision first and the residual is quantized after; an SVD of a 4-bit weight is never taken.

Which layers, and the inits that read data or a quantized base (EVA, CorDA, LoftQ, orthogonal): inits.py. Saving,
loading and merging (an init that changed the base is saved as a plain rank-2r LoRA against the original): lorafiles.py.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveInt, field_validator, model_validator

from oneml.errors import OnemlError
from oneml.methods import METHODS, MethodConfig, MethodContext
from oneml.methods import inits as init_steps
from oneml.methods.lorafiles import (
    get_peft_model_quietly,
    is_factor,
    load,
    merge,
    quantize_base,
    save,
    set_factors,
    write_dtypes,
)
from oneml.methods.targets import adapted_layers, check_targets

MUTATING_INITS = frozenset({"olora", "pissa", "corda"})
"""Inits that move part of W0 into the adapter and leave a residual base (LoftQ with loftq_iter > 1 too: see
`LoRAConfig.mutates_base`)."""

FULL_PRECISION_INITS = MUTATING_INITS | {"orthogonal"}
"""Inits that read or write the float weights: on a quantized base they run before it is quantized."""

_PEFT_INIT: dict[str, bool | str] = {
    "kaiming": True,
    "gaussian": "gaussian",
    "orthogonal": "orthogonal",
    "olora": "olora",
    "pissa": "pissa",
    "corda": "corda",
    "eva": "eva",
    "loftq": True,  # computed here (inits.loftq) on a kaiming adapter: peft's own LoftQ needs CUDA
}
"""Our ``init`` names -> peft's ``init_lora_weights``."""

INIT_OPTIONS: dict[str, tuple[str, ...]] = {
    "calibration_batches": ("eva", "corda"),
    "eva_rho": ("eva",),
    "corda_mode": ("corda",),
    "loftq_iter": ("loftq",),
}
"""Options of one init (or two) -> the inits they apply to; set with another init they are refused."""

LORAPLUS_EMBEDDING_LR = 1e-6
"""The LoRA+ reference implementation's fixed learning rate for adapters on embedding layers."""


class LoRAConfig(MethodConfig):
    name: Literal["lora"] = "lora"
    complexity: ClassVar[tuple[float, str]] = (1, "rank, alpha, targets: the reference recipe, supported everywhere")
    r: PositiveInt = 16
    """Rank of the update B A."""
    alpha: float = Field(default=32.0, gt=0)
    """Scale numerator: the update is multiplied by alpha / r (alpha / sqrt(r) with rslora)."""
    dropout: float = Field(default=0.05, ge=0, lt=1)
    """Dropout on the adapter's input."""
    target_modules: list[str] | Literal["all-linear"] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    """Short names of the linear layers to adapt (q_proj, v_proj, ...), or "all-linear"."""
    rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(r)."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases train alongside the adapter."""
    init: Literal["kaiming", "gaussian", "orthogonal", "olora", "pissa", "corda", "eva", "loftq"] = "kaiming"
    """Adapter init: kaiming, gaussian, orthogonal (B A = 0); olora, pissa, corda (part of W0 moves into the
    adapter, the residual is frozen); eva (A from training activations); loftq (quantized base: fits its error)."""
    use_dora: bool = False
    """DoRA: train a per-row magnitude on top of the normalised direction W0 + s B A."""
    loraplus_ratio: float | None = Field(default=None, gt=0)
    """LoRA+: learning rate of every B = ratio x lr (A and the rest keep lr); unset = one rate."""
    quantize: Literal["none", "nf4", "fp4", "int8"] = "none"
    """Quantize the frozen base (QLoRA): 4-bit nf4 or fp4, or 8-bit int8 (bitsandbytes)."""
    double_quant: bool = True
    """4-bit only: also quantize the quantization scales (QLoRA's double quantization)."""
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """4-bit only: dtype of the matmuls with the dequantized base; auto = the model's dtype."""
    rank_pattern: dict[str, PositiveInt] | None = None
    """Another r for some layers: {key: r}, a key matching the end of a layer name (q_proj, layers.0.mlp.down_proj)."""
    alpha_pattern: dict[str, float] | None = None
    """Another alpha for some layers: {key: alpha}, keys as in rank_pattern."""
    layers_to_transform: list[NonNegativeInt] | None = None
    """Adapt only these decoder layers (indices from 0); unset = every layer."""
    layers_pattern: str | None = None
    """With layers_to_transform: the name of the numbered layer list (layers, h, ...); unset = the first one."""
    lora_bias: bool = False
    """Train a bias on B too (peft's lora_bias; merges only into layers that have a bias)."""
    calibration_batches: PositiveInt = 8
    """init eva or corda: training batches (train.batch_size rows each) whose activations set the init."""
    eva_rho: float = Field(default=2.0, ge=1)
    """init eva: a layer's rank may grow to rho x r as ranks are redistributed by explained variance (1 = fixed)."""
    corda_mode: Literal["ipm", "kpm"] = "ipm"
    """init corda: ipm (the adapter starts on the directions the data uses most) or kpm (on the least: preserves
    the rest, i.e. what the data does not touch)."""
    loftq_iter: PositiveInt = 1
    """init loftq: alternating quantize/SVD steps (1: the base is Q(W0), as QLoRA's; more changes the base)."""

    identity_defaults: ClassVar[tuple[str, ...]] = (
        "rank_pattern",
        "alpha_pattern",
        "layers_to_transform",
        "layers_pattern",
        "lora_bias",
        "calibration_batches",
        "eva_rho",
        "corda_mode",
        "loftq_iter",
    )

    @field_validator("r", mode="before")
    @classmethod
    def _r_message(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            raise ValueError("must be a positive integer")
        return value

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and not value:
            raise ValueError("must name at least one module, or be 'all-linear'")
        return value

    @field_validator("rank_pattern", "alpha_pattern")
    @classmethod
    def _patterns(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, number in (value or {}).items():
            try:
                re.compile(key)
            except re.error as err:
                raise ValueError(f"key {key!r} is not a valid regular expression ({err})") from None
            if number <= 0:
                raise ValueError(f"must map each key to a positive number, got {key}: {number}")
        return value

    @model_validator(mode="after")
    def _combinations(self) -> LoRAConfig:
        check_combinations(self)
        return self

    def peft_init(self) -> bool | str:
        """peft's ``init_lora_weights`` for this config (PiSSA adds its SVD choice)."""
        return _PEFT_INIT[self.init]

    def peft_config(self, init: bool | str | None = None, targets: list[str] | str | None = None):
        """peft's LoraConfig; ``init`` overrides the init, ``targets`` the target modules (resolved for a model)."""
        from peft import LoraConfig
        from peft.tuners.lora.config import CordaConfig, EvaConfig

        init = self.peft_init() if init is None else init
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules if targets is None else targets,
            use_rslora=self.rslora,
            bias=self.bias,
            init_lora_weights=init,
            use_dora=self.use_dora,
            rank_pattern=dict(self.rank_pattern or {}),
            alpha_pattern=dict(self.alpha_pattern or {}),
            layers_to_transform=self.layers_to_transform,
            layers_pattern=self.layers_pattern,
            lora_bias=self.lora_bias,
            eva_config=EvaConfig(rho=self.eva_rho) if init == "eva" else None,
            corda_config=CordaConfig(corda_method=self.corda_mode) if init == "corda" else None,
            task_type="CAUSAL_LM",
        )

    def mutates_base(self) -> bool:
        return self.init in MUTATING_INITS or (self.init == "loftq" and self.loftq_iter > 1)

    @property
    def scaling(self) -> float:
        """s, computed exactly as peft does (the residual of a mutating init depends on its last bit)."""
        return self.alpha / math.sqrt(self.r) if self.rslora else self.alpha / self.r

    def check(self, ctx: MethodContext) -> None:
        check(self, ctx)

    def apply(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        return apply(model, self, ctx)

    def prepare(self, model: torch.nn.Module) -> None:
        """Variant hook, after the adapter is initialised and before training (SORSA splits off its singular values)."""

    def sharding_refusal(self) -> str | None:
        if self.quantize == "int8":
            return (
                f"shard method {self.name}'s 8-bit base (bitsandbytes' Int8Params lose their scales when FSDP converts "
                "them); use quantize: nf4 (sharded) or strategy ddp"
            )
        if self.quantize != "none" and self.use_dora:
            return (
                f"shard method {self.name} on a quantized base: TRL trains its LoRA factors in bfloat16 but DoRA's "
                "magnitudes in float32, and FSDP2 needs one dtype per sharded group; use strategy ddp"
            )
        if self.loraplus_ratio is not None:
            return (
                f"pass method {self.name}'s parameter groups (LoRA+ learning rates) to the optimizer it builds over "
                "the sharded parameters (transformers refuses optimizers under FSDP); use strategy ddp"
            )
        if self.mutates_base():
            return (
                f"save method {self.name} with init {self.init}: it needs its own save step (the base is converted "
                "too), which needs the whole model in one process; use strategy ddp"
            )
        return None

    def optimizer_groups(self, model: torch.nn.Module, learning_rate: float) -> list[dict[str, Any]] | None:
        if self.loraplus_ratio is None:
            return None
        return loraplus_groups(model, learning_rate, self.loraplus_ratio)

    def callbacks(self, model: torch.nn.Module, ctx: MethodContext) -> list[Any]:
        from oneml.methods.diagnostics import lora_diagnostics

        return lora_diagnostics(model, ctx)

    def save(self, model: torch.nn.Module, path: Path) -> None:
        save(model, Path(path), self)

    def save_metadata(self, model: torch.nn.Module, path: Path) -> None:
        write_dtypes(model, Path(path))

    def load(self, base: torch.nn.Module, path: Path) -> torch.nn.Module:
        return load(base, Path(path), self)

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        return merge(model)


# --- checks -------------------------------------------------------------------------------------------------------


def check(cfg: LoRAConfig, ctx: MethodContext) -> None:
    """Refuse settings that cannot work, or would be silently ignored, before the model is loaded."""
    from oneml.models.quantization import quantization_problem

    if cfg.quantize != "none":
        problem = quantization_problem(ctx.device)
        if problem:
            raise OnemlError(f"method.quantize: {problem}")
    if cfg.use_dora and cfg.quantize == "int8" and _device_type(ctx.device) == "cpu":
        # peft's DoRA re-reads an 8-bit weight through a CPU path that drops its scales: the next forward fails.
        raise OnemlError("method.use_dora: DoRA on an int8 base fails on CPU (peft/bitsandbytes); use quantize: nf4")
    if cfg.quantize not in ("nf4", "fp4"):
        only_4bit = f"applies to 4-bit quantization (quantize: nf4 or fp4), got quantize: {cfg.quantize}"
        if cfg.compute_dtype != "auto":
            raise OnemlError(f"method.compute_dtype: {only_4bit}")
        if not cfg.double_quant:
            raise OnemlError(f"method.double_quant: {only_4bit}")


def check_combinations(cfg: LoRAConfig) -> None:
    """Refuse, as the config loads, settings that contradict each other (no model needed)."""
    defaults = type(cfg).model_fields
    for option, inits in INIT_OPTIONS.items():
        if cfg.init not in inits and getattr(cfg, option) != defaults[option].default:
            raise OnemlError(f"method.{option}: applies to init: {' or '.join(inits)}, got init: {cfg.init}")
    if cfg.init == "loftq" and cfg.quantize == "none":
        raise OnemlError(
            "method.init: loftq fits the adapter to a quantized base's error; set method.quantize: nf4 (fp4, int8) "
            "or use method qlora"
        )
    if cfg.init == "orthogonal":
        odd = [str(r) for r in [cfg.r, *(cfg.rank_pattern or {}).values()] if r % 2]
        if odd:
            raise OnemlError(f"method.r: init orthogonal needs even ranks (rank_pattern too), got {', '.join(odd)}")
    if cfg.lora_bias and (cfg.init != "kaiming" or cfg.use_dora):
        raise OnemlError(
            f"method.lora_bias: peft trains B's bias only with init: kaiming and without DoRA, got init: {cfg.init}"
            + (", use_dora: true" if cfg.use_dora else "")
        )
    if cfg.layers_pattern is not None and cfg.layers_to_transform is None:
        raise OnemlError("method.layers_pattern: applies with method.layers_to_transform, which is unset")
    if cfg.layers_to_transform is not None and not cfg.layers_to_transform:
        raise OnemlError("method.layers_to_transform: must list at least one layer index, or be unset")


def _device_type(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


# --- apply --------------------------------------------------------------------------------------------------------


def apply(model: torch.nn.Module, cfg: LoRAConfig, ctx: MethodContext) -> torch.nn.Module:
    check_targets(model, cfg.target_modules)
    targets = init_steps.resolved_targets(model, cfg)
    init_steps.check_layers(model, cfg, cfg.peft_config(init=True, targets=targets))
    factors, initial = None, None  # initial: (A0, B0) per layer whose s B0 A0 the base has given up, for `save`
    if cfg.quantize != "none":
        if cfg.init in FULL_PRECISION_INITS:
            model, factors = _init_in_full_precision(model, cfg, ctx, targets)
        elif cfg.init == "loftq":
            factors, initial = init_steps.loftq(model, cfg, targets)
        quantize_base(model, cfg, float_storage=ctx.sharded)
    if factors is None:
        peft_model = _initialised(model, cfg, ctx, targets)
    else:
        peft_model = get_peft_model_quietly(model, cfg.peft_config(init=True, targets=targets))
        set_factors(peft_model, factors)
    if initial is None and cfg.init in MUTATING_INITS:
        initial = {
            name: (layer.lora_A[a].weight, layer.lora_B[a].weight) for name, layer, a in adapted_layers(peft_model)
        }
    if initial is not None:
        # What `save` needs to express the trained adapter against the original base.
        peft_model.oneml_initial = {name: (A.detach().clone(), B.detach().clone()) for name, (A, B) in initial.items()}
    cfg.prepare(peft_model)
    return peft_model


def _initialised(model: torch.nn.Module, cfg: LoRAConfig, ctx: MethodContext, targets: list[str] | str) -> Any:
    """``get_peft_model`` with the config's init, and the data-driven steps around it (CorDA before, EVA after)."""
    peft_cfg = cfg.peft_config(targets=targets)
    if cfg.init in init_steps.BEFORE_PEFT:
        init_steps.BEFORE_PEFT[cfg.init](model, peft_cfg, cfg, ctx)
    peft_model = get_peft_model_quietly(model, peft_cfg)
    if cfg.init in init_steps.AFTER_PEFT:
        init_steps.AFTER_PEFT[cfg.init](peft_model, cfg, ctx)
    return peft_model


def _init_in_full_precision(
    model: torch.nn.Module, cfg: LoRAConfig, ctx: MethodContext, targets: list[str] | str
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Run the init on the float model; return the base as the init leaves it (the residual of a mutating init)
    and the initial A0, B0 (peft's keys)."""
    from peft.utils import get_peft_model_state_dict

    peft_model = _initialised(model, cfg, ctx, targets)
    state = get_peft_model_state_dict(peft_model)
    initial = {k: v.detach().clone() for k, v in state.items() if is_factor(k)}
    return peft_model.unload(), initial


# --- LoRA+ --------------------------------------------------------------------------------------------------------


def loraplus_groups(model: torch.nn.Module, learning_rate: float, ratio: float) -> list[dict[str, Any]]:
    """AdamW groups: every lora_B at ratio x lr; embedding adapters at the reference's fixed rate; the rest at lr."""
    rates = {"lora_B": learning_rate * ratio, "embedding": LORAPLUS_EMBEDDING_LR, "rest": learning_rate}
    params: dict[str, list[torch.nn.Parameter]] = {"rest": [], "lora_B": [], "embedding": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            params[_loraplus_group(name)].append(param)
    return [{"name": group, "params": ps, "lr": rates[group]} for group, ps in params.items() if ps]


def _loraplus_group(name: str) -> str:
    if ".lora_embedding_" in name:
        return "embedding"
    return "lora_B" if ".lora_B." in name else "rest"


METHODS.register("lora", LoRAConfig, "LoRA: frozen base + trainable low-rank update (alpha/r) B A; rsLoRA option")
