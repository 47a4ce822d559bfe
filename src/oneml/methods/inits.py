"""How the LoRA family's adapters start, beyond peft's plain ones (a helper of lora.py, not a method): which layers
are adapted, and the inits that read data or the quantized base.

- **Which layers.** ``target_modules`` by short name, narrowed by ``layers_to_transform`` (decoder layer indices;
  ``layers_pattern`` names the numbered layer list when it is not the model's first one). ``rank_pattern`` and
  ``alpha_pattern`` give some layers another r or alpha: a key matches the end of a layer's name (``q_proj``, or
  ``layers.3.self_attn.q_proj``; a regular expression, peft's ``get_pattern_key``). `check_layers` refuses, before
  anything runs, an index the model does not have and a key that matches no adapted layer, naming what exists.
- **EVA** (explained variance adaptation, Paischer et al. 2024, https://arxiv.org/abs/2410.07170): A0 = the top
  right singular vectors of each layer's inputs on training batches (the directions the data uses most), B0 = 0,
  so training starts from W0 exactly; ranks are redistributed across layers by explained variance, up to
  rho x r per layer (peft's ``initialize_lora_eva_weights``; the incremental SVD runs until it converges).
- **CorDA** (context-oriented decomposition, Yang et al. 2024, https://arxiv.org/abs/2406.05223): the SVD of
  W0 C, C the covariance of the layer's inputs on training rows; ``ipm`` (instruction-previewed) puts the top-r
  directions in the adapter, ``kpm`` (knowledge-preserved) the bottom-r ones, keeping the rest frozen. Like
  PiSSA, s B0 A0 moves out of W0 and the residual is frozen (peft's ``preprocess_corda``, one row at a time: its
  covariance hook takes one sequence per call).
- **LoftQ** (Li et al. 2023, https://arxiv.org/abs/2310.08659) on a quantized base: B0 A0 = the top-r SVD of the
  quantization error W0 - Dequant(Q(W0)), divided by s, so Q(W0) + s B0 A0 starts nearer W0 than QLoRA's Q(W0).
  With ``loftq_iter`` T > 1 the steps alternate: Q_t = Q(W0 - s B_{t-1} A_{t-1}), B_t A_t = SVD_r(W0 - Q_t) / s;
  the base is then Q(W0 - s B' A') (B' A' the step before the last), a base that changes with the init. peft's
  own LoftQ (``loftq_init``, ``replace_lora_weights_loftq``) moves every weight to CUDA and reads the float weights
  from a safetensors file, so it cannot run on CPU or on a model built in memory; the same computation is done here
  with bitsandbytes' quantizer as `quantize_model` applies it (and, unlike peft's, with the scale s taken out).
- **orthogonal** (peft's ``orthogonal``): A0 and B0 come from complementary halves of one random orthogonal
  r x r matrix, so B0 A0 = 0 (training starts from W0) while neither is zero; needs an even r.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch

from oneml.errors import OnemlError
from oneml.methods.targets import adapted_layers, linear_module_names, output_head_name

if TYPE_CHECKING:
    from oneml.methods import MethodContext
    from oneml.methods.lora import LoRAConfig

EVA_RANKS = "eva_ranks.json"
"""The run's diagnostics artifact with each adapted layer's rank after EVA's redistribution."""

EVA_MAX_PASSES = 50
"""EVA's incremental SVD cycles over the calibration batches until every layer's components converge; after this
many passes over them it is stopped with an error rather than looping on (more or longer batches converge)."""


# --- which layers -------------------------------------------------------------------------------------------------


def targeted(model: torch.nn.Module, peft_cfg: Any) -> list[str]:
    """Names of the linear layers peft will adapt under ``peft_cfg`` (its own matcher, without building anything)."""
    from peft.tuners.tuners_utils import check_target_module_exists

    head = output_head_name(model)
    every = peft_cfg.target_modules == "all-linear"
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and name.rsplit(".", 1)[-1] != head
        and (every or check_target_module_exists(peft_cfg, name))
    ]


def resolved_targets(model: torch.nn.Module, cfg: LoRAConfig) -> list[str] | str:
    """``target_modules`` as peft should get it: "all-linear" spelled out when layers are picked by index (peft
    refuses layers_to_transform with a pattern string) and for CorDA (whose preprocessing matches names only)."""
    if cfg.target_modules == "all-linear" and (cfg.layers_to_transform is not None or cfg.init == "corda"):
        return linear_module_names(model)
    return cfg.target_modules


def check_layers(model: torch.nn.Module, cfg: LoRAConfig, peft_cfg: Any) -> None:
    """Refuse layer indices the model lacks and pattern keys that match no adapted layer, naming what exists."""
    if cfg.layers_to_transform is not None:
        found = layer_indices(model, cfg.layers_pattern)
        if not found:
            raise OnemlError(
                f"method.layers_pattern: {cfg.layers_pattern!r} names no numbered list of layers in this model "
                "(its decoder layers are under e.g. 'layers' or 'h')"
            )
        missing = [i for i in cfg.layers_to_transform if i not in found]
        if missing:
            raise OnemlError(
                f"method.layers_to_transform: {', '.join(map(str, missing))} out of range; this model has layers "
                f"{min(found)}-{max(found)}"
            )
    names = targeted(model, peft_cfg)
    for field in ("rank_pattern", "alpha_pattern"):
        for key in getattr(cfg, field) or {}:
            if not any(re.match(rf"(.*\.)?({key})$", name) for name in names):
                short = sorted({n.rsplit(".", 1)[-1] for n in names})
                raise OnemlError(
                    f"method.{field}: {key!r} matches no adapted layer; a key matches the end of a layer name, and "
                    f"the adapted ones are {', '.join(short)} in layers {_layer_span(names, cfg.layers_pattern)} "
                    f"(e.g. {names[0]})"
                )


def layer_indices(model: torch.nn.Module, pattern: str | None) -> set[int]:
    """The decoder layer indices in the model's module names (peft's reading: the first numbered segment, or the one
    after ``pattern``)."""
    regex = re.compile(rf"(?:^|.*?\.){re.escape(pattern)}\.(\d+)(?:\.|$)" if pattern else r".*?\.[^.]*\.(\d+)\.")
    found = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            match = regex.match(name)
            if match:
                found.add(int(match.group(1)))
    return found


def _layer_span(names: list[str], pattern: str | None) -> str:
    indices = sorted({int(m.group(1)) for n in names if (m := re.search(r"\.(\d+)\.", n))})
    return f"{indices[0]}-{indices[-1]}" if indices else "(none numbered)"


# --- data-driven inits --------------------------------------------------------------------------------------------


def calibration(cfg: LoRAConfig, ctx: MethodContext, model: torch.nn.Module) -> list[dict[str, torch.Tensor]]:
    """``cfg.calibration_batches`` batches of the run's training rows, on the model's device."""
    if ctx.calibration is None:
        raise OnemlError(
            f"method.init: {cfg.init} reads training batches; train through oneml.train (or pass "
            "MethodContext(calibration=...) to apply)"
        )
    device = next(model.parameters()).device
    return [{k: v.to(device) for k, v in batch.items()} for batch in ctx.calibration(cfg.calibration_batches)]


def eva(peft_model: Any, cfg: LoRAConfig, ctx: MethodContext) -> None:
    """EVA: A from the SVD of each adapted layer's inputs on training batches (B stays 0); ranks redistributed."""
    from peft import initialize_lora_eva_weights
    from peft.tuners.lora.eva import forward_fn_dict

    batches = calibration(cfg, ctx, peft_model)
    passes = {"n": 0}

    def forward(model: Any, inputs: dict[str, torch.Tensor]) -> Any:
        passes["n"] += 1
        if passes["n"] > EVA_MAX_PASSES * len(batches):
            raise OnemlError(
                f"method.init: eva's SVD did not converge in {EVA_MAX_PASSES} passes over {len(batches)} training "
                "batches; raise method.calibration_batches or train.batch_size"
            )
        return forward_fn_dict(model, inputs)

    with torch.no_grad():
        initialize_lora_eva_weights(
            peft_model, dataloader=batches, forward_fn=forward, show_progress_bar=False, gather_distributed_inputs=False
        )
    # The ranks EVA redistributed (a layer it gave rank 0 is no longer adapted), recorded with the run.
    ctx.log_json(EVA_RANKS, {name: layer.r[a] for name, layer, a in adapted_layers(peft_model)})


def corda(model: torch.nn.Module, peft_cfg: Any, cfg: LoRAConfig, ctx: MethodContext) -> None:
    """CorDA's preprocessing: input covariances from training rows, one sequence at a time; peft then builds the
    adapter (and the residual) from them in ``get_peft_model``."""
    from peft.tuners.lora.corda import preprocess_corda

    batches = calibration(cfg, ctx, model)

    def run_model() -> None:
        for batch in batches:
            for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
                model(input_ids=ids[mask.bool()].unsqueeze(0))  # (1, T): the hook reads one sequence

    training = model.training
    with torch.no_grad():
        preprocess_corda(model, peft_cfg, run_model=run_model)
    model.train(training)


BEFORE_PEFT = {"corda": corda}
"""Data-driven steps that run on the base before peft builds the adapter: (model, peft config, cfg, ctx)."""
AFTER_PEFT = {"eva": eva}
"""Data-driven steps that set the adapter peft built: (peft model, cfg, ctx)."""


# --- LoftQ --------------------------------------------------------------------------------------------------------


def loftq(model: torch.nn.Module, cfg: LoRAConfig, targets: list[str] | str) -> tuple[dict, dict | None]:
    """LoftQ on the float ``model`` before it is quantized: returns A, B (peft's state-dict keys) and, for
    loftq_iter > 1, the (A', B') per layer whose s B' A' the base ``model`` now has subtracted (its weights are set to
    the residual W0 - s B' A' that `quantize_base` will quantize); None when the base is W0 itself."""
    from peft import get_peft_model

    probe = get_peft_model(model, cfg.peft_config(init=True, targets=targets))  # per-layer r and s, as peft sets them
    layers = [(name, layer.r[a], layer.scaling[a]) for name, layer, a in adapted_layers(probe)]
    model = probe.unload()
    factors: dict[str, torch.Tensor] = {}
    previous: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, r, s in layers:
        linear = model.get_submodule(name)
        A, B, before = _loftq_layer(linear.weight.data, r, s, cfg)
        prefix = f"base_model.model.{name}"
        factors[f"{prefix}.lora_A.weight"], factors[f"{prefix}.lora_B.weight"] = A, B
        if before is not None:
            previous[name] = before[0], before[1]
            linear.weight.data = residual(linear.weight.data, s, before[0], before[1])
    return factors, previous or None


def _loftq_layer(weight: torch.Tensor, r: int, s: float, cfg: LoRAConfig) -> tuple[torch.Tensor, torch.Tensor, Any]:
    from oneml.models.quantization import round_trip

    w0 = weight.to(torch.float32)
    base, before = weight, None
    for step in range(cfg.loftq_iter):
        A, B = top_r(w0 - round_trip(base, cfg.quantize, cfg.double_quant).to(torch.float32), r, s)
        if step + 1 < cfg.loftq_iter:
            before, base = (A, B), residual(weight, s, A, B)
    return A, B, before


def top_r(matrix: torch.Tensor, r: int, s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with s B A = the best rank-r approximation of ``matrix`` (d_out x d_in), split evenly between them."""
    U, S, Vh = torch.linalg.svd(matrix, full_matrices=False)
    root = (S[:r] / s).sqrt()  # (r,)
    return root.unsqueeze(1) * Vh[:r], U[:, :r] * root  # A: (r, d_in), B: (d_out, r)


def residual(weight: torch.Tensor, s: float, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """W - s B A in W's dtype, computed as peft's PiSSA/OLoRA/CorDA inits compute their residual (in float32, the
    same expression), so that `lora.load` rebuilds it bit for bit from the saved factors."""
    return (weight.to(torch.float32) - s * B.to(weight.device) @ A.to(weight.device)).to(weight.dtype)
