"""LoRA: low-rank adaptation (Hu et al. 2021, https://arxiv.org/abs/2106.09685), and the family built on it.

A frozen weight W0 (d_out x d_in) is adapted as

    W = W0 + s * B A,    A: (r x d_in),  B: (d_out x r),  s = alpha / r   (alpha / sqrt(r) with rsLoRA)

rsLoRA (https://arxiv.org/abs/2312.03732) keeps the update's size stable as r grows. The family's variants are
subclasses of `LoRAConfig` that only change defaults (qlora, loraplus, dora, pissa, sorsa); every one of their
switches is a field here, so they combine (PiSSA + DoRA on a 4-bit base with LoRA+ learning rates, say):

- ``init``: how A and B start. ``kaiming`` (peft's default; A Kaiming-uniform, B = 0) and ``gaussian``
  (A ~ N(0, 1/r), B = 0) start from W0 exactly. ``olora`` (https://arxiv.org/abs/2406.01775; W0 = QR,
  B0 = Q[:, :r], A0 = R[:r]) and ``pissa`` (https://arxiv.org/abs/2404.02948; s B0 A0 = the top-r SVD of W0)
  move part of W0 into the adapter and freeze the residual W_res = W0 - s B0 A0 ("mutating" inits).
- ``use_dora``: DoRA's magnitude / direction split (dora.py).
- ``loraplus_ratio``: LoRA+'s learning rate for every B, ratio x lr (loraplus.py).
- ``quantize``, ``double_quant``, ``compute_dtype``: QLoRA's quantized frozen base (qlora.py). A mutating init
  runs in full precision first and the residual is quantized after; an SVD of a 4-bit weight is never taken.

Save / load / merge. A plain init saves the adapter as peft writes it; ``load`` quantizes the fresh base the same
way first (quantization is deterministic, so the logits match exactly). A mutating init trained W_res + s B A,
which no other base has, so ``save`` writes a plain rank-2r LoRA against the ORIGINAL W0 (peft's
``path_initial_model_for_weight_conversion``, done in memory with the A0, B0 kept at ``apply``):

    W_res + s B A = W0 + s (B A - B0 A0) = W0 + s [B, -B0] [A; A0]        (alpha doubled, x sqrt 2 with rsLoRA)

which any peft user can load onto the original model. On a quantized base Quant(W_res) + s B A differs from
Quant(W0) + s (B A - B0 A0), so ``load`` rebuilds W_res from the A0, B0 half of the file, quantizes it as training
did and attaches the rank-r A, B: the trained model, bit for bit. The dtype each adapter weight trained in is
written beside it (``adapter_dtypes.json``) and restored by ``load``: TRL trains a quantized model's adapters in
bfloat16, and the reloaded model must compute as the trained one did. ``merge`` dequantizes a quantized base first
and always returns a float model.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt, field_validator

from oneml.errors import OnemlError
from oneml.methods import METHODS, MethodConfig, MethodContext, adapt
from oneml.methods.targets import adapted_layers, check_targets, output_head_name

MUTATING_INITS = frozenset({"olora", "pissa"})
"""Inits that move part of W0 into the adapter and leave a residual base."""

_PEFT_INIT: dict[str, bool | str] = {"kaiming": True, "gaussian": "gaussian", "olora": "olora", "pissa": "pissa"}
"""Our ``init`` names -> peft's ``init_lora_weights``."""

LORAPLUS_EMBEDDING_LR = 1e-6
"""The LoRA+ reference implementation's fixed learning rate for adapters on embedding layers."""

_PEFT_PREFIX = "base_model.model."


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
    init: Literal["kaiming", "gaussian", "olora", "pissa"] = "kaiming"
    """Adapter init: kaiming or gaussian (B = 0), olora (QR of W0) or pissa (top-r SVD of W0; residual frozen)."""
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

    def peft_init(self) -> bool | str:
        """peft's ``init_lora_weights`` for this config (PiSSA adds its SVD choice)."""
        return _PEFT_INIT[self.init]

    def peft_config(self, init: bool | str | None = None):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            use_rslora=self.rslora,
            bias=self.bias,
            init_lora_weights=self.peft_init() if init is None else init,
            use_dora=self.use_dora,
            task_type="CAUSAL_LM",
        )

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

    def saved_copies(self) -> int:
        return 2 if self.init in MUTATING_INITS else 1

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
        if self.init in MUTATING_INITS:
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

    def frozen_base(self, model: torch.nn.Module) -> torch.nn.Module:
        # The starting model's weights (W0, before any mutating init), quantized as the policy's base is.
        return quantize_base(model, self) if self.quantize != "none" else model


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


def _device_type(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


# --- apply --------------------------------------------------------------------------------------------------------


def apply(model: torch.nn.Module, cfg: LoRAConfig, ctx: MethodContext) -> torch.nn.Module:
    check_targets(model, cfg.target_modules)
    initial = None
    if cfg.quantize != "none":
        if cfg.init in MUTATING_INITS:
            model, initial = _init_in_full_precision(model, cfg)
        quantize_base(model, cfg, float_storage=ctx.sharded)
    peft_model = adapt(model, cfg.peft_config(init=True if initial is not None else None))
    if initial is not None:
        _set_factors(peft_model, initial)
    if cfg.init in MUTATING_INITS:
        # What `save` needs to express the trained adapter against the original base.
        peft_model.oneml_initial = {
            name: (layer.lora_A[a].weight.detach().clone(), layer.lora_B[a].weight.detach().clone())
            for name, layer, a in adapted_layers(peft_model)
        }
    cfg.prepare(peft_model)
    return peft_model


def quantize_base(model: torch.nn.Module, cfg: LoRAConfig, float_storage: bool = False) -> torch.nn.Module:
    """Quantize ``model``'s linear layers (not the output head) as ``cfg`` says, in place (``float_storage``: see
    `quantize_model`; the numbers are the same either way)."""
    from oneml.models.quantization import quantize_model

    compute = None if cfg.compute_dtype == "auto" else getattr(torch, cfg.compute_dtype)
    skip = (output_head_name(model),)
    return quantize_model(
        model,
        cfg.quantize,
        double_quant=cfg.double_quant,
        compute_dtype=compute,
        skip=skip,
        float_storage=float_storage,
    )


def _init_in_full_precision(model: torch.nn.Module, cfg: LoRAConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Run a mutating init on the float model; return the residual base and the initial A0, B0 (peft's keys)."""
    from peft.utils import get_peft_model_state_dict

    peft_model = adapt(model, cfg.peft_config())
    state = get_peft_model_state_dict(peft_model)
    initial = {k: v.detach().clone() for k, v in state.items() if _is_factor(k)}
    return peft_model.unload(), initial


def _set_factors(model: torch.nn.Module, factors: dict[str, torch.Tensor]) -> None:
    """Load A, B (peft's keys) into ``model``; DoRA magnitudes are recomputed for the base as it now is."""
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, factors)
    _refresh_magnitudes(model)


def _refresh_magnitudes(model: torch.nn.Module) -> None:
    from oneml.models.quantization import dequantized_weight

    with torch.no_grad():
        for _, layer, a in adapted_layers(model):
            if a not in layer.lora_magnitude_vector:
                continue
            A, B = layer.lora_A[a].weight, layer.lora_B[a].weight
            weight = dequantized_weight(layer.get_base_layer()).to(A.dtype)
            norm = layer.lora_magnitude_vector[a].get_weight_norm(weight, B @ A, layer.scaling[a])
            layer.lora_magnitude_vector[a].weight.copy_(norm)


def _is_factor(key: str) -> bool:
    return ".lora_A." in key or ".lora_B." in key


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


# --- save / load / merge ------------------------------------------------------------------------------------------


DTYPES_FILE = "adapter_dtypes.json"
"""Beside the adapter: the dtype each adapter weight trained in, restored by `load`."""


def save(model: torch.nn.Module, path: Path, cfg: LoRAConfig) -> None:
    if cfg.init in MUTATING_INITS:
        save_against_original(model, path, cfg)
    else:
        model.save_pretrained(path, safe_serialization=True)
    write_dtypes(model, path)


def write_dtypes(model: torch.nn.Module, path: Path) -> None:
    """The trainer may train adapters in another dtype than peft creates them in (TRL casts the adapters of a
    quantized model to bfloat16); `load` restores it so that the reloaded model computes exactly as the trained one."""
    dtypes = {name: _dtype_name(p) for name, p in model.named_parameters() if p.requires_grad}
    for name, layer, a in adapted_layers(model):  # effective A, B: what a reloaded plain LoRA holds
        dtypes[f"{_PEFT_PREFIX}{name}.lora_A.{a}.weight"] = _dtype_name(layer.lora_A[a].weight)
        dtypes[f"{_PEFT_PREFIX}{name}.lora_B.{a}.weight"] = _dtype_name(layer.lora_B[a].weight)
    (path / DTYPES_FILE).write_text(json.dumps(dtypes, indent=1, sort_keys=True))


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _restore_dtypes(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    file = path / DTYPES_FILE
    dtypes = json.loads(file.read_text()) if file.is_file() else {}
    for name, param in model.named_parameters():
        if name in dtypes:
            param.data = param.data.to(getattr(torch, dtypes[name]))
    return model


def save_against_original(model: torch.nn.Module, path: Path, cfg: LoRAConfig) -> None:
    """Write the trained adapter of a mutating init as a plain rank-2r LoRA against the original base."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    initial = model.oneml_initial
    with warnings.catch_warnings():
        # SORSA's singular values live under lora_A and are 1-D by design, which peft takes for a sharded tensor.
        warnings.filterwarnings("ignore", message=".*invalid shape.*")
        state = get_peft_model_state_dict(model)
    # Everything but A and B (DoRA magnitudes, trained biases) carries over; A and B are rebuilt below.
    state = {k: v for k, v in state.items() if not _is_factor(k)}
    for name, layer, a in adapted_layers(model):
        A0, B0 = initial[name]
        state[f"{_PEFT_PREFIX}{name}.lora_A.weight"] = torch.cat([layer.lora_A[a].weight.detach(), A0], dim=0)
        state[f"{_PEFT_PREFIX}{name}.lora_B.weight"] = torch.cat([layer.lora_B[a].weight.detach(), -B0], dim=1)
    config = copy.deepcopy(next(iter(model.peft_config.values())))
    config.r *= 2
    config.lora_alpha *= math.sqrt(2) if config.use_rslora else 2  # same s = alpha / r (alpha / sqrt(r))
    config.init_lora_weights = True  # loading must not run the SVD / QR again
    config.inference_mode = True
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(path))
    state = {k: v.contiguous() for k, v in state.items()}
    save_file(state, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})


def load(base: torch.nn.Module, path: Path, cfg: LoRAConfig) -> torch.nn.Module:
    """Attach what `save` wrote to a fresh (unquantized, original) base."""
    from peft import PeftModel

    if cfg.quantize != "none" and cfg.init in MUTATING_INITS:
        return _restore_dtypes(_load_residual_quantized(base, path, cfg), path)
    if cfg.quantize != "none":
        quantize_base(base, cfg)
    return _restore_dtypes(PeftModel.from_pretrained(base, str(path)), path)


def _load_residual_quantized(base: torch.nn.Module, path: Path, cfg: LoRAConfig) -> torch.nn.Module:
    """Rebuild Quant(W0 - s B0 A0) + s B A from the rank-2r file: exactly the trained model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(path / "adapter_model.safetensors"))
    r, scaling = cfg.r, cfg.scaling
    with torch.no_grad():
        for key in [k for k in state if k.endswith(".lora_A.weight")]:
            prefix = key.removesuffix(".lora_A.weight")
            A2, B2 = state[key], state[f"{prefix}.lora_B.weight"]
            A0, B0 = A2[r:], -B2[:, r:]
            layer = base.get_submodule(prefix.removeprefix(_PEFT_PREFIX))
            weight = layer.weight.data
            # The same expression, in the same order, as peft's pissa/olora init: the residual is bit-identical.
            layer.weight.data = (weight.to(torch.float32) - scaling * B0.to(weight.device) @ A0.to(weight.device)).to(
                weight.dtype
            )
            state[key], state[f"{prefix}.lora_B.weight"] = A2[:r], B2[:, :r]
    quantize_base(base, cfg)
    model = adapt(base, cfg.peft_config(init=True))
    set_peft_model_state_dict(model, state)
    return model


def merge(model: torch.nn.Module) -> torch.nn.Module:
    """Fold the adapter into the base; a quantized base is dequantized first, so the result is a float model."""
    from oneml.models.quantization import is_quantized

    if any(is_quantized(m) for m in model.modules()):
        return _merge_dequantized(model)
    return model.merge_and_unload()


def _merge_dequantized(model: torch.nn.Module) -> torch.nn.Module:
    from oneml.models.quantization import dequantize_model, dequantized_weight, float_dtype, float_linear

    base = model.get_base_model()
    dtype = float_dtype(base)
    with torch.no_grad():
        for name, layer, a in adapted_layers(model):
            inner = layer.get_base_layer()
            merged = merged_weight(layer, a, dequantized_weight(inner).to(torch.float32))
            parent, child = name.rsplit(".", 1)
            setattr(base.get_submodule(parent), child, float_linear(inner, dtype, merged))
    return dequantize_model(base)


def merged_weight(layer: Any, adapter: str, weight: torch.Tensor) -> torch.Tensor:
    """W0 + s B A, or DoRA's m * (W0 + s B A) / ||W0 + s B A||_row, for one peft LoRA layer and a float W0."""
    delta = layer.get_delta_weight(adapter).to(weight)
    direction = weight + delta
    if adapter not in layer.lora_magnitude_vector:
        return direction
    magnitude = layer.lora_magnitude_vector[adapter].weight.to(weight)
    return (magnitude / direction.norm(dim=1)).unsqueeze(1) * direction


METHODS.register("lora", LoRAConfig, "LoRA: frozen base + trainable low-rank update (alpha/r) B A; rsLoRA option")
