"""How the LoRA family's adapters are built on a (quantized) base, written, read back and merged (a helper of
lora.py, not a method).

A plain init saves the adapter as peft writes it; ``load`` quantizes the fresh base the same way first
(quantization is deterministic, so the logits match exactly). An init that changes the base ("mutating": PiSSA,
OLoRA, CorDA, LoftQ with loftq_iter > 1) trained W_res + s B A with W_res = W0 - s B0 A0, which no other base has,
so ``save`` writes a plain rank-2r LoRA against the ORIGINAL W0 (peft's ``path_initial_model_for_weight_conversion``,
done in memory with the A0, B0 kept at ``apply``):

    W_res + s B A = W0 + s (B A - B0 A0) = W0 + s [B, -B0] [A; A0]        (alpha doubled, x sqrt 2 with rsLoRA;
                                                                            rank_pattern and alpha_pattern alike)

which any peft user can load onto the original model. On a quantized base Quant(W_res) + s B A differs from
Quant(W0) + s (B A - B0 A0), so ``load`` rebuilds W_res from the A0, B0 half of the file, quantizes it as training
did and attaches the rank-r A, B: the trained model, bit for bit. The dtype each adapter weight trained in is
written beside it (``adapter_dtypes.json``) and restored by ``load``: TRL trains a quantized model's adapters in
bfloat16, and the reloaded model must compute as the trained one did. ``merge`` dequantizes a quantized base first
and always returns a float model; a B bias (``lora_bias``) merges only into layers that have a bias.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from oneml.errors import OnemlError
from oneml.methods import inits
from oneml.methods.targets import adapted_layers, output_head_name

if TYPE_CHECKING:
    from oneml.methods.lora import LoRAConfig

PEFT_PREFIX = "base_model.model."


def get_peft_model_quietly(model: torch.nn.Module, peft_cfg: Any) -> Any:
    """peft's ``get_peft_model``, without its warnings about what oneml already checked or arranged (a lora_bias
    layer without a bias merges through `merge`'s refusal; EVA's and CorDA's data come from `inits`), with the task
    type of ``model`` (`oneml.methods.adapt`: a reward model's score head trains and saves with the adapter)."""
    from oneml.methods import adapt

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*lora_bias=True.*")
        return adapt(model, peft_cfg)


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


def set_factors(model: torch.nn.Module, factors: dict[str, torch.Tensor]) -> None:
    """Load A, B (peft's keys) into ``model``; DoRA magnitudes are recomputed for the base as it now is."""
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, factors)
    refresh_magnitudes(model)


def refresh_magnitudes(model: torch.nn.Module) -> None:
    from oneml.models.quantization import dequantized_weight

    with torch.no_grad():
        for _, layer, a in adapted_layers(model):
            if a not in layer.lora_magnitude_vector:
                continue
            A, B = layer.lora_A[a].weight, layer.lora_B[a].weight
            weight = dequantized_weight(layer.get_base_layer()).to(A.dtype)
            norm = layer.lora_magnitude_vector[a].get_weight_norm(weight, B @ A, layer.scaling[a])
            layer.lora_magnitude_vector[a].weight.copy_(norm)


def is_factor(key: str) -> bool:
    return ".lora_A." in key or ".lora_B." in key


# --- save / load / merge ------------------------------------------------------------------------------------------


DTYPES_FILE = "adapter_dtypes.json"
"""Beside the adapter: the dtype each adapter weight trained in, restored by `load`."""


def save(model: torch.nn.Module, path: Path, cfg: LoRAConfig) -> None:
    if cfg.mutates_base():
        save_against_original(model, path, cfg)
    else:
        model.save_pretrained(path, safe_serialization=True)
    write_dtypes(model, path)


def write_dtypes(model: torch.nn.Module, path: Path) -> None:
    """The trainer may train adapters in another dtype than peft creates them in (TRL casts the adapters of a
    quantized model to bfloat16); `load` restores it so that the reloaded model computes exactly as the trained one."""
    dtypes = {name: _dtype_name(p) for name, p in model.named_parameters() if p.requires_grad}
    for name, layer, a in adapted_layers(model):  # effective A, B: what a reloaded plain LoRA holds
        dtypes[f"{PEFT_PREFIX}{name}.lora_A.{a}.weight"] = _dtype_name(layer.lora_A[a].weight)
        dtypes[f"{PEFT_PREFIX}{name}.lora_B.{a}.weight"] = _dtype_name(layer.lora_B[a].weight)
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
    state = {k: v for k, v in state.items() if not is_factor(k)}
    for name, layer, a in adapted_layers(model):
        A0, B0 = initial[name]
        state[f"{PEFT_PREFIX}{name}.lora_A.weight"] = torch.cat([layer.lora_A[a].weight.detach(), A0], dim=0)
        state[f"{PEFT_PREFIX}{name}.lora_B.weight"] = torch.cat([layer.lora_B[a].weight.detach(), -B0], dim=1)
    config = copy.deepcopy(next(iter(model.peft_config.values())))
    alpha_factor = math.sqrt(2) if config.use_rslora else 2  # the same s = alpha / r (alpha / sqrt(r)) at 2r
    config.r *= 2
    config.lora_alpha *= alpha_factor
    config.rank_pattern = {k: 2 * v for k, v in config.rank_pattern.items()}
    config.alpha_pattern = {k: alpha_factor * v for k, v in config.alpha_pattern.items()}
    config.init_lora_weights = True  # loading must not run the SVD / QR / CorDA again
    config.corda_config = None
    config.inference_mode = True
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(path))
    state = {k: v.contiguous() for k, v in state.items()}
    save_file(state, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})


def load(base: torch.nn.Module, path: Path, cfg: LoRAConfig) -> torch.nn.Module:
    """Attach what `save` wrote to a fresh (unquantized, original) base."""
    from peft import PeftModel

    if cfg.quantize != "none" and cfg.mutates_base():
        return _restore_dtypes(_load_residual_quantized(base, path, cfg), path)
    if cfg.quantize != "none":
        quantize_base(base, cfg)
    return _restore_dtypes(PeftModel.from_pretrained(base, str(path)), path)


def _load_residual_quantized(base: torch.nn.Module, path: Path, cfg: LoRAConfig) -> torch.nn.Module:
    """Rebuild Quant(W0 - s B0 A0) + s B A from the rank-2r file: exactly the trained model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(path / "adapter_model.safetensors"))
    with torch.no_grad():
        for key in [k for k in state if k.endswith(".lora_A.weight")]:
            prefix = key.removesuffix(".lora_A.weight")
            name = prefix.removeprefix(PEFT_PREFIX)
            A2, B2 = state[key], state[f"{prefix}.lora_B.weight"]
            r = A2.shape[0] // 2
            A0, B0 = A2[r:], -B2[:, r:]
            layer = base.get_submodule(name)
            # The same expression as the init's: the residual is bit-identical to the one that trained.
            layer.weight.data = inits.residual(layer.weight.data, layer_scaling(cfg, name, r), A0, B0)
            state[key], state[f"{prefix}.lora_B.weight"] = A2[:r], B2[:, :r]
    targets = inits.resolved_targets(base, cfg)
    quantize_base(base, cfg)
    model = get_peft_model_quietly(base, cfg.peft_config(init=True, targets=targets))
    set_peft_model_state_dict(model, state)
    return model


def layer_scaling(cfg: LoRAConfig, name: str, r: int) -> float:
    """s of the layer ``name`` with rank r, as peft computes it (alpha from alpha_pattern where a key matches)."""
    from peft.utils.other import get_pattern_key

    patterns = cfg.alpha_pattern or {}
    alpha = patterns.get(get_pattern_key(patterns.keys(), name), cfg.alpha)
    return alpha / math.sqrt(r) if cfg.rslora else alpha / r


def merge(model: torch.nn.Module) -> torch.nn.Module:
    """Fold the adapter into the base; a quantized base is dequantized first, so the result is a float model."""
    from oneml.models.quantization import is_quantized

    biased = [name for name, layer, a in adapted_layers(model) if layer.lora_bias.get(a)]
    no_bias = [name for name in biased if getattr(model.get_base_model().get_submodule(name), "bias", None) is None]
    if no_bias:
        raise OnemlError(
            f"method.lora_bias: cannot merge B's bias into {no_bias[0]}, which has no bias ({len(no_bias)} such "
            "layers); export the adapter (--mode adapter), or target layers with a bias"
        )
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
