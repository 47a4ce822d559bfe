"""Which computation serves the LM head + per-token log-probs while training (``train.chunked_loss``).

Every objective needs log p(y_t | x_<t) of the labelled tokens (SFT their mean, DPO per-sequence sums, ORPO
per-sequence means), never the (tokens x vocabulary) logits themselves. The choices:

- ``ours`` (`oneml.models.lm_head`): labelled tokens only, in tiles; exact (fp32 softmax, fp32 accumulation);
  runs everywhere; the statistics the trainers log (entropy, top-1, mean logit) come with it.
- ``trl``: TRL's own fused head, as its SFT and DPO trainers install it (Triton kernels on CUDA; every position
  scored, prompt and padding included). ORPO's trainer has none.
- ``liger``: Liger's fused linear cross-entropy (liger-kernel >= 0.8.5, Triton, CUDA only), per token
  (``reduction="none"``, whose backward folds each token's gradient in) with fp32 weight-gradient accumulation;
  it also gives the argmax (token accuracy) but no entropy or mean logit (those logs are left out).
- ``cce``: Apple's cut cross-entropy (cut-cross-entropy, Triton, CUDA only), per token, with gradient filtering
  off (``filter_eps=None``) so that its gradients are exact; no statistics; no head bias.

``auto`` (the default, spelled ``true``) takes ``ours`` on every device: it is the measured choice on CPU
(BENCHMARKS.md) and, on CUDA, the exact path whose speed against the others is what benchmarks/perf_gpu.py
measures (not yet run: no GPU was lent). Evaluation forwards (no gradients) always run ``ours``: it computes
every statistic the evaluators read, exactly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oneml.registry import Registry

AUTO_BY_DEVICE = {"cpu": "ours", "cuda": "ours"}
"""What ``auto`` picks per device type; a change here needs a measurement (benchmarks/perf_gpu.py --only lm-head)."""


@dataclass(frozen=True)
class Head:
    log_probs: Callable[..., tuple[Any, ...]] | None
    """(hidden (N, H), weight (V, H), targets (N,), bias, stats) -> (log-probs (N,), *stats); None: the trainer's
    own head (nothing is installed)."""
    unavailable: Callable[[str, Any], str | None]
    """(device type, model) -> why it cannot run here, or None."""


def _ours(hidden, weight, targets, bias, stats):
    from oneml.models.lm_head import chunked_log_probs

    return chunked_log_probs(hidden, weight, targets, bias, stats=stats)


def _missing(hidden: Any, stats: tuple[str, ...], given: dict[str, Any]) -> list[Any]:
    """The statistics a backend does not compute, as NaN (the trainers' logs of them are dropped)."""
    import torch

    nan = torch.full(hidden.shape[:1], float("nan"), device=hidden.device)
    return [given.get(name, nan) for name in stats]


def _liger(hidden, weight, targets, bias, stats):
    import torch
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    top1 = "is_top1" in stats
    out = liger_fused_linear_cross_entropy(
        hidden, weight, targets, bias=bias, reduction="none", accum_dtype=torch.float32, return_predicted_tokens=top1
    )
    loss = out.loss if top1 else out
    given = {"is_top1": (out.predicted_tokens == targets).float()} if top1 else {}
    return (-loss.float(), *_missing(hidden, stats, given))


def _cce(hidden, weight, targets, bias, stats):
    from cut_cross_entropy import linear_cross_entropy

    # Its kernels take one dtype: the activations' (under autocast, bf16 activations and fp32 master weights).
    loss = linear_cross_entropy(hidden, weight.to(hidden.dtype), targets, reduction="none", filter_eps=None)
    return (-loss.float(), *_missing(hidden, stats, {}))


def _version_at_least(package: str, wanted: tuple[int, ...]) -> bool:
    try:
        parts = importlib.metadata.version(package).split("+")[0].split(".")
        return tuple(int(p) for p in parts[: len(wanted)] if p.isdigit()) >= wanted
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False


def _triton_package(module: str, package: str, minimum: tuple[int, ...]) -> Callable[[str, Any], str | None]:
    def unavailable(device: str, model: Any) -> str | None:
        if device != "cuda":
            return "has no CPU backend (Triton kernels): needs a CUDA device"
        if importlib.util.find_spec(module) is None:
            return f"needs the {package} package (pip install 'oneml[gpu]'), not installed"
        if not _version_at_least(package, minimum):
            return f"needs {package} >= {'.'.join(map(str, minimum))}"
        return None

    return unavailable


def _cce_unavailable(device: str, model: Any) -> str | None:
    reason = _triton_package("cut_cross_entropy", "cut-cross-entropy", (25, 1))(device, model)
    head = model.get_output_embeddings() if model is not None else None
    if reason is None and getattr(head, "bias", None) is not None:
        return "has no head bias, and this model's LM head has one"
    return reason


HEADS: Registry[Head] = Registry("LM head")
HEADS.register("ours", Head(_ours, lambda device, model: None), "oneml's chunked head: labelled tokens, exact")
HEADS.register("trl", Head(None, lambda device, model: None), "TRL's fused head (SFT and DPO trainers)")
# 0.8.5: the first release read here whose reduction="none" backward applies each token's own gradient.
HEADS.register(
    "liger",
    Head(_liger, _triton_package("liger_kernel", "liger-kernel", (0, 8, 5))),
    "Liger fused linear cross-entropy (CUDA)",
)
HEADS.register("cce", Head(_cce, _cce_unavailable), "cut cross-entropy, no gradient filtering (CUDA)")

CHOICES = ("auto", "off", *HEADS.names())
"""What ``train.chunked_loss`` accepts (besides true = auto and false = off)."""


def resolve(choice: bool | str, device: str) -> str | None:
    """The head a run uses for ``train.chunked_loss`` on this device type; None: the trainer's own (off)."""
    if choice is False:
        return None
    return AUTO_BY_DEVICE.get(device, "ours") if choice is True else str(choice)


def training_log_probs(name: str) -> Callable[..., tuple[Any, ...]] | None:
    """What `oneml.models.lm_head.install_chunked_head` takes for head ``name`` (None: ours)."""
    return None if name == "ours" else HEADS.get(name).log_probs
