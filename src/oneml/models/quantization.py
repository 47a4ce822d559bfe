"""Quantize a model's linear layers in memory with bitsandbytes (QLoRA's 4-bit NF4/FP4, LLM.int8's 8-bit).

The model may be a random in-memory one, so we do not go through ``from_pretrained(quantization_config=...)``: every
``nn.Linear`` except the output head is replaced by a ``bnb.nn.Linear4bit`` / ``bnb.nn.Linear8bitLt`` holding the
same weights, quantized on the weight's device (bitsandbytes quantizes when a parameter is moved to a device: a 4-bit
one on any move, an 8-bit one only on a move *from the CPU*, so 8-bit weights are handed over from a CPU copy even
when the model is on a GPU already; otherwise they stayed unquantized half-precision tensors without scales). The
model is flagged ``is_loaded_in_4bit`` / ``is_loaded_in_8bit`` as ``from_pretrained`` would, so that peft wraps
those layers with its bitsandbytes-aware LoRA layers. Quantization is deterministic: the same float weights give
the same quantized ones, which is what makes ``load`` reproduce a trained quantized run exactly.

``dequantize_model`` is the inverse up to quantization error: plain float ``nn.Linear`` layers with the
dequantized weights, for merging into a float model.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import torch

from oneml.errors import OnemlError

_DEVICES = ("cpu", "cuda", "xpu")
"""Device types whose bitsandbytes back-end trains through 4-bit and 8-bit layers."""

_FLAGS = {"nf4": "is_loaded_in_4bit", "fp4": "is_loaded_in_4bit", "int8": "is_loaded_in_8bit"}


def quantization_problem(device: str) -> str | None:
    """Why quantization cannot run on ``device`` here (a sentence), or None when it can."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "needs bitsandbytes (pip install bitsandbytes)"
    kind = torch.device(device).type if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind not in _DEVICES:
        return f"bitsandbytes cannot train a quantized model on device {kind!r}; use one of {', '.join(_DEVICES)}"
    return None


def quantize_model(
    model: torch.nn.Module,
    mode: str,
    *,
    double_quant: bool = True,
    compute_dtype: torch.dtype | None = None,
    skip: tuple[str, ...] = (),
    float_storage: bool = False,
) -> torch.nn.Module:
    """Replace every ``nn.Linear`` (except those whose short name is in ``skip``) by its quantized twin, in place.

    ``compute_dtype`` (4-bit only): the dtype inputs and dequantized weights are multiplied in; None = the
    weight's own dtype. ``double_quant`` (4-bit only): also quantize the per-block scales (QLoRA's double
    quantization). ``float_storage`` (4-bit only): keep the packed 4-bit bytes in a tensor of the compute dtype
    instead of uint8 (the same bytes, so the same numbers): FSDP shards a floating parameter like any other, while a
    uint8 one it must keep whole on every process (QLoRA under FSDP, as ``bnb_4bit_quant_storage`` does).
    """
    build = _BUILDERS[mode]
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ == "Conv1D":
                raise OnemlError(
                    f"method.quantize: {parent_name}.{name} is a GPT-2 style Conv1D layer, which in-memory "
                    "quantization does not handle; use quantize: none for this model"
                )
            if type(child) is torch.nn.Linear and name not in skip:
                compute = compute_dtype or child.weight.dtype
                setattr(parent, name, build(child, mode, double_quant, compute, compute if float_storage else None))
    setattr(model, _FLAGS[mode], True)
    return model


def _linear4bit(
    linear: torch.nn.Linear, mode: str, double_quant: bool, compute_dtype: torch.dtype, storage: torch.dtype | None
) -> Any:
    import bitsandbytes as bnb

    weight = linear.weight
    storage = storage or torch.uint8
    layer = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=compute_dtype,
        compress_statistics=double_quant,
        quant_type=mode,
        quant_storage=storage,
        device="meta",
    )
    # module=layer: the layer keeps the quantization state too, so it can restore it on a weight that FSDP has
    # turned into a plain tensor (bitsandbytes' fix_4bit_weight_quant_state_from_module), as Linear4bit's own does.
    packed = bnb.nn.Params4bit(
        weight.data.detach().clone(),
        requires_grad=False,
        compress_statistics=double_quant,
        quant_type=mode,
        quant_storage=storage,
        module=layer,
    )
    layer.weight = packed.to(weight.device)  # quantizes
    if linear.bias is not None:
        layer.bias = torch.nn.Parameter(linear.bias.data.detach().clone(), requires_grad=False)
    # On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight the first time it runs in eval mode without
    # grad; the repacked layout then takes a kernel with no autograd (wrong input gradients in later training) that
    # also needs layer sizes in multiples of 64. Keeping the training layout avoids both.
    if hasattr(layer, "support_avx512bf16_for_cpu"):
        layer.support_avx512bf16_for_cpu = False
    return layer


def _linear8bit(
    linear: torch.nn.Linear, mode: str, double_quant: bool, compute_dtype: torch.dtype, storage: torch.dtype | None
) -> Any:
    import bitsandbytes as bnb

    weight = linear.weight
    # threshold 0: no fp16 outlier decomposition, so the layer is a pure int8 matmul whatever the input.
    layer = bnb.nn.Linear8bitLt(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        has_fp16_weights=False,
        threshold=0.0,
        device="meta",
    )
    # Int8Params.to quantizes only when the data comes from the CPU (bitsandbytes' own from_pretrained path loads
    # on the CPU first); a copy made on the GPU would be moved as is and keep its float weights, without scales.
    packed = bnb.nn.Int8Params(weight.data.detach().to("cpu", copy=True), requires_grad=False, has_fp16_weights=False)
    layer.weight = packed.to(weight.device)  # quantizes, on that device
    if layer.weight.dtype != torch.int8 or layer.weight.SCB is None:
        raise RuntimeError(f"bitsandbytes did not quantize an 8-bit weight on {weight.device}")
    if linear.bias is not None:
        layer.bias = torch.nn.Parameter(linear.bias.data.detach().clone(), requires_grad=False)
    return layer


_BUILDERS: dict[str, Callable[[torch.nn.Linear, str, bool, torch.dtype, torch.dtype | None], Any]] = {
    "nf4": _linear4bit,
    "fp4": _linear4bit,
    "int8": _linear8bit,
}


def round_trip(weight: torch.Tensor, mode: str, double_quant: bool = True) -> torch.Tensor:
    """Dequant(Q(weight)): what `quantize_model` makes of this weight (quantization is deterministic), for inits
    that fit the adapter to the quantization error (LoftQ)."""
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    linear.weight = torch.nn.Parameter(weight.detach(), requires_grad=False)
    return dequantized_weight(_BUILDERS[mode](linear, mode, double_quant, weight.dtype, None))


def is_quantized(module: torch.nn.Module) -> bool:
    """True for a bitsandbytes 4-bit or 8-bit linear layer."""
    weight = getattr(module, "weight", None)
    return weight is not None and is_quantized_param(weight)


def dequantized_weight(module: torch.nn.Module) -> torch.Tensor:
    """The float weight a quantized linear layer stands for (its own weight when not quantized); never mutates it.

    (peft's ``dequantize_module_weight`` re-assigns an 8-bit layer's weight on CPU, which drops its scales.)
    """
    weight = module.weight
    kind = type(weight).__name__
    if kind == "Params4bit":
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, weight.quant_state)
    if kind == "Int8Params":
        import bitsandbytes.functional as bnbf

        # After the first forward the row scales live on the layer's state, not on the parameter.
        scales = weight.SCB if getattr(weight, "SCB", None) is not None else module.state.SCB
        return bnbf.int8_vectorwise_dequant(weight.data, scales.to(weight.device))
    return weight.data


def float_linear(module: torch.nn.Module, dtype: torch.dtype, weight: torch.Tensor | None = None) -> torch.nn.Linear:
    """A plain ``nn.Linear`` in ``dtype`` with ``weight`` (default: the module's dequantized weight) and its bias."""
    weight = dequantized_weight(module) if weight is None else weight
    out_features, in_features = weight.shape
    bias = getattr(module, "bias", None)
    layer = torch.nn.Linear(in_features, out_features, bias=bias is not None, device="meta")
    layer.weight = torch.nn.Parameter(weight.detach().to(dtype), requires_grad=False)
    if bias is not None:
        layer.bias = torch.nn.Parameter(bias.detach().to(dtype), requires_grad=False)
    return layer


def float_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's float weights (its embeddings), which quantized layers are dequantized to."""
    for param in model.parameters():
        if param.is_floating_point() and not is_quantized_param(param):
            return param.dtype
    return torch.float32


def is_quantized_param(param: torch.Tensor) -> bool:
    return type(param).__name__ in ("Params4bit", "Int8Params")


def dequantize_model(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every quantized linear layer by a float ``nn.Linear`` with its dequantized weight, in place."""
    dtype = float_dtype(model)
    for _, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if is_quantized(child):
                setattr(parent, name, float_linear(child, dtype))
    for flag in set(_FLAGS.values()):
        if getattr(model, flag, False):
            setattr(model, flag, False)
    return model
