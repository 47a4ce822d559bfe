"""What the methods that are one peft tuner share (a helper, not a method): each such method file is its typed
config, the peft class it stands for, and its registration.

A `PeftTuner` turns its own fields into peft's config (``renamed`` where oneml's name differs, ``pinned`` for peft
settings oneml fixes) and then everything else is the same for every tuner:

- ``apply``: the targets are checked (a name that matches no linear layer is one line listing the model's), the
  base is quantized when ``quantize`` asks (where the tuner computes from the layer's input, not its weight), and
  ``get_peft_model`` runs; peft's own ValueErrors (a block size that does not divide a layer) become one line.
- ``save`` / ``load``: peft's adapter folder, plus the dtype each trained weight had (TRL trains a quantized
  model's adapters in bfloat16), restored on load so the reloaded model computes as the trained one.
- ``merge``: peft's ``merge_and_unload``. On a quantized base the adapter is moved onto the dequantized float base
  first (peft would add a float delta to packed 4-bit bytes), so the merged model is a plain float model. On a
  quantized base the adapter trains in bfloat16, as TRL trains it (cast at ``apply`` already, so any trainer sees
  the same model).
- diagnostics: tuners whose update is low-rank, dW = B' A' with known factors, log kappa(B' A') as LoRA does
  (`diagnostics.condition_number`); the others (orthogonal, Hadamard, Kronecker, sparse, spectral) log none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator

from oneml.errors import OnemlError
from oneml.methods import MethodConfig, MethodContext, adapt
from oneml.methods.diagnostics import LayerDiagnostics, condition_number, whole
from oneml.methods.targets import check_targets, output_head_name

DTYPES_FILE = "adapter_dtypes.json"
"""Beside the adapter: the dtype each trained weight had, restored by `load` (the LoRA family's file name)."""


class PeftTuner(MethodConfig):
    """A method that is one peft config (``peft_type``); subclasses add their fields and metadata."""

    peft_type: ClassVar[str]
    """peft's ``PeftType`` name (VERA, IA3, ...)."""
    renamed: ClassVar[dict[str, str]] = {}
    """oneml field -> peft field, where oneml's name differs (``dropout`` -> ``vera_dropout``)."""
    pinned: ClassVar[dict[str, Any]] = {}
    """peft settings oneml fixes (saving VeRA's projections, so a reload never depends on a seed)."""
    quantize_refusal: ClassVar[str | None] = None
    """Why this tuner cannot train on a quantized base (the end of 'method.quantize: ...'), or None when it can."""
    fsdp_refusal: ClassVar[str | None] = None
    """Why FSDP cannot shard it (measured: 2 CPU processes, FSDP2), or None."""
    quantized_needs_bfloat16: ClassVar[bool] = False
    """On a quantized base TRL trains the adapter in bfloat16; True when the tuner's output then meets the model's
    activations without a cast back (RoAd, adaption prompts), so a float32 model is refused (model.dtype)."""

    quantize: Literal["none", "nf4", "fp4"] = "none"
    """Quantize the frozen base in memory: 4-bit nf4 or fp4 (bitsandbytes), as LoRA's quantize."""

    def peft_kwargs(self, model: torch.nn.Module) -> dict[str, Any]:
        """peft's config keyword arguments for this config on ``model`` (subclasses resolve model-dependent
        defaults here, e.g. 'every layer')."""
        own = self.model_dump(exclude={"name", "quantize"})
        return {self.renamed.get(k, k): v for k, v in own.items()} | self.pinned

    def peft_config(self, model: torch.nn.Module) -> Any:
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

        return PEFT_TYPE_TO_CONFIG_MAPPING[self.peft_type](task_type="CAUSAL_LM", **self.peft_kwargs(model))

    def sharding_refusal(self) -> str | None:
        return f"shard method {self.name}: {self.fsdp_refusal}; use strategy ddp" if self.fsdp_refusal else None

    def check(self, ctx: MethodContext) -> None:
        check_quantize(self.name, self.quantize, self.quantize_refusal, ctx.device)

    def check_model(self, model: torch.nn.Module) -> None:
        """Refuse what this model cannot take (a dtype; targets it lacks, in `LayerTuner`), before peft sees it."""
        dtype = next(model.parameters()).dtype
        if self.quantize != "none" and self.quantized_needs_bfloat16 and dtype != torch.bfloat16:
            raise OnemlError(
                f"method.quantize: {self.name} on a quantized base needs model.dtype: bfloat16 (TRL trains its "
                f"adapter in bfloat16, whose output then meets the model's {str(dtype).removeprefix('torch.')} "
                "activations)"
            )

    def apply(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        self.check(ctx)
        self.check_model(model)
        if self.quantize == "none":
            return self.prepare(peft_model(self.name, model, self.peft_config(model)))
        quantize(model, self.quantize, float_storage=ctx.sharded)
        adapted = peft_model(self.name, model, self.peft_config(model))
        # TRL trains a quantized model's adapters in bfloat16 (QLoRA's choice); cast here, so that the model this
        # returns is the one that trains, with any trainer, and `prepare` sees the dtypes training will use.
        for param in adapted.parameters():
            if param.requires_grad:
                param.data = param.data.to(torch.bfloat16)
        return self.prepare(adapted)

    def prepare(self, model: Any) -> Any:
        """Tuner hook after peft built (or loaded) the adapter; returns the model."""
        return model

    def callbacks(self, model: torch.nn.Module, ctx: MethodContext) -> list[Any]:
        if type(self).factors is PeftTuner.factors:
            return []
        return [LowRankKappa(tuner_layers(model), ctx, self.factors)]

    def factors(self, layer: Any, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(A', B') with dW = B' A' (A': r x d_in, B': d_out x r) for tuners whose update is low-rank."""
        raise NotImplementedError

    def save(self, model: torch.nn.Module, path: Path) -> None:
        model.save_pretrained(path, safe_serialization=True)
        self.save_metadata(model, path)

    def save_metadata(self, model: torch.nn.Module, path: Path) -> None:
        write_dtypes(model, Path(path))

    def load(self, base: torch.nn.Module, path: Path) -> torch.nn.Module:
        from peft import PeftModel

        if self.quantize != "none":
            quantize(base, self.quantize)  # deterministic: the same 4-bit weights training had
        return self.prepare(restore_dtypes(PeftModel.from_pretrained(base, str(path)), Path(path)))

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        return merge(model)


class LayerTuner(PeftTuner):
    """A tuner that adapts linear layers picked by name."""

    target_modules: list[str] | Literal["all-linear"] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    """Short names of the linear layers to adapt (q_proj, v_proj, ...), or "all-linear"."""

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and not value:
            raise ValueError("must name at least one module, or be 'all-linear'")
        return value

    def check_model(self, model: torch.nn.Module) -> None:
        check_targets(model, self.target_modules)
        super().check_model(model)


# --- apply --------------------------------------------------------------------------------------------------------


def check_quantize(name: str, mode: str, refusal: str | None, device: str) -> None:
    from oneml.models.quantization import quantization_problem

    if mode == "none":
        return
    if refusal:
        raise OnemlError(f"method.quantize: {name} {refusal}; use quantize: none, or method lora/qlora")
    problem = quantization_problem(device)
    if problem:
        raise OnemlError(f"method.quantize: {problem}")


def quantize(model: torch.nn.Module, mode: str, float_storage: bool = False) -> torch.nn.Module:
    """Every linear layer but the output head in 4 bits, double-quantized, computing in the model's dtype."""
    from oneml.models.quantization import quantize_model

    skip = (output_head_name(model),)
    return quantize_model(model, mode, double_quant=True, skip=skip, float_storage=float_storage)


def peft_model(name: str, model: torch.nn.Module, config: Any) -> torch.nn.Module:
    """``get_peft_model``, with peft's refusals (a size that does not fit a layer) as one line naming the method."""
    try:
        return adapt(model, config)
    except ValueError as err:
        raise OnemlError(f"method {name}: {one_line(err)}") from None


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def tuner_layers(model: torch.nn.Module) -> list[tuple[str, Any, str]]:
    """(name, layer, adapter) for every peft tuner layer with an active adapter (any tuner, not only LoRA)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = []
    for full_name, module in model.named_modules():
        if not isinstance(module, BaseTunerLayer) or not module.adapter_layer_names:
            continue
        owner = getattr(module, module.adapter_layer_names[0])  # the adapters this layer holds weights for
        name = full_name.removeprefix("base_model.model.")
        layers += [(name, module, adapter) for adapter in module.active_adapters if adapter in owner]
    return layers


# --- save / load / merge ------------------------------------------------------------------------------------------


def write_dtypes(model: torch.nn.Module, path: Path) -> None:
    dtypes = {n: str(p.dtype).removeprefix("torch.") for n, p in model.named_parameters() if p.requires_grad}
    path.mkdir(parents=True, exist_ok=True)
    (path / DTYPES_FILE).write_text(json.dumps(dtypes, indent=1, sort_keys=True))


def restore_dtypes(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    file = path / DTYPES_FILE
    dtypes = json.loads(file.read_text()) if file.is_file() else {}
    for name, param in model.named_parameters():
        if name in dtypes:
            param.data = param.data.to(getattr(torch, dtypes[name]))
    return model


def merge(model: Any) -> torch.nn.Module:
    """Fold the adapter into the base; on a quantized base into its dequantized float twin first."""
    from oneml.models.quantization import is_quantized

    if any(is_quantized(m) for m in model.modules()):
        model = onto_float_base(model)
    return model.merge_and_unload()


def onto_float_base(model: Any) -> Any:
    """The same adapter on the dequantized base: peft's merge into a 4-bit layer would add to its packed bytes."""
    from peft import get_peft_model, set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    from oneml.models.quantization import dequantize_model

    config = model.peft_config[model.active_adapter]
    state = get_peft_model_state_dict(model)
    trained = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    base = dequantize_model(without_adapters(model))  # no peft wrapper left to hide a quantized layer's weight
    fresh = get_peft_model(base, config)
    set_peft_model_state_dict(fresh, state)
    for name, param in fresh.named_parameters():  # peft creates them in float32; they trained in bfloat16
        if name in trained:
            param.data = param.data.to(trained[name])
    return fresh


def without_adapters(model: Any) -> torch.nn.Module:
    """The base model with every tuner layer replaced by the layer it wraps (peft's ``unload``, which IA3 refuses on
    a quantized base even when nothing is merged)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = model.get_base_model()
    for _, parent in list(base.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BaseTunerLayer):
                setattr(parent, name, child.get_base_layer())
    return base


# --- diagnostics --------------------------------------------------------------------------------------------------


class LowRankKappa(LayerDiagnostics):
    """kappa(B' A') per adapted layer, for tuners whose update has known low-rank factors."""

    artifact = "kappa.json"

    def __init__(self, layers: list[tuple[str, Any, str]], ctx: MethodContext, factors: Any):
        super().__init__(layers, ctx)
        self.factors = factors

    def measure(self) -> dict[str, dict[str, float | None]]:
        kappas = {}
        for name, layer, a in self.layers:
            A, B = self.factors(layer, a)
            kappas[name] = condition_number(whole(A), whole(B))
        return {"kappa": kappas}
