"""The reference of the objectives that score the policy against where it started (DPO, KTO).

The reference is the run's starting model: the base, or the model an earlier run left (`model.adapter`, merged
in first). ``objective.reference`` says how it is kept:

- ``adapter``: TRL's frozen copy of the policy's adapter, a second peft adapter ("ref") holding the adapter's
  initial values (policy + one adapter of memory). It is the policy before its first step, which is the starting
  model for every init, also the ones that change the base (PiSSA's copy holds B0 A0 on the same residual
  W0 - B0 A0). TRL adds that copy with the policy's own peft config; an init that reads or changes the base (PiSSA,
  OLoRA, CorDA, LoftQ, EVA) would run again on the already-changed base, so the copy is added with peft's plain
  init and then overwritten with the trained adapter's values (`copies_without_init`). Methods that cannot be
  copied say why (`MethodConfig.frozen_copy_refusal`: full fine-tuning, bottleneck, AdaLoRA, SORSA).
- ``copy``: a frozen copy of the starting model, made before the method applies (policy + model memory).
- ``precomputed``: the reference log-probs of every training example computed once before training (TRL's
  ``precompute_ref_log_probs``) and every evaluation's reference scored then too; no reference is held while
  training. It is computed with the adapter copy where the method has one, with the policy itself for a model
  without a peft adapter (full fine-tuning: the policy is the starting model until the first step), else with a
  copy of the starting model that is freed once scored.
- ``auto`` (default): ``adapter`` where the method allows it, else ``copy`` (TRL's default for a model without an
  adapter). The run's config records the resolved choice, so a LoRA run keeps the run id it had when the default
  was ``adapter``.
"""

from __future__ import annotations

import contextlib
import copy as copying
from typing import Any, ClassVar, Literal

from oneml.errors import OnemlError
from oneml.objectives import ObjectiveConfig

REFERENCE_ADAPTER = "ref"
"""The name TRL gives its frozen copy of the policy's adapter."""


class UsesReference(ObjectiveConfig):
    """An objective trained against a frozen reference: the field, its resolution per method and its refusals."""

    reference: Literal["auto", "adapter", "copy", "precomputed"] = "auto"
    """auto: adapter where the method allows it, else copy; adapter: a frozen copy of the adapter (TRL's);
    copy: a frozen copy of the starting model; precomputed: reference log-probs computed once before training."""

    needs_reference: ClassVar[bool] = True

    def for_method(self, method: Any) -> UsesReference:
        if self.reference != "auto":
            return self
        return self.model_copy(update={"reference": "copy" if method.frozen_copy_refusal() else "adapter"})

    def check(self, method: Any) -> None:
        why = method.frozen_copy_refusal()
        if self.reference == "adapter" and why:
            raise OnemlError(
                f"objective.reference: 'adapter' keeps a frozen copy of the method's adapter, and {method.name} "
                f"{why}; use reference: copy or precomputed"
            )

    def reference_model(self, model: Any, method: Any) -> Any:
        # A precomputed reference needs a model to compute with only where the policy has no usable copy of itself.
        transient = self.reference == "precomputed" and method.is_adapter and method.frozen_copy_refusal()
        if self.reference != "copy" and not transient:
            return None
        ref = copying.deepcopy(model).eval()
        for param in ref.parameters():
            param.requires_grad_(False)
        return ref

    def reference_scored(self, trainer: Any) -> None:
        if self.reference == "precomputed":
            trainer.ref_model = None  # TRL reads the precomputed log-probs from the batches from now on

    def finished(self, trainer: Any) -> None:
        drop_reference_adapter(trainer.model)


@contextlib.contextmanager
def copies_without_init(model: Any):
    """While TRL builds its trainer: any adapter added to ``model`` gets peft's plain init (B = 0, the base left as it
    is). TRL then copies the trained adapter's values into it, so the init is overwritten anyway; run again, a
    mutating init would convert the already-converted base under the policy."""
    configs = list(getattr(model, "peft_config", {}).values())
    held = [(config, config.init_lora_weights) for config in configs if hasattr(config, "init_lora_weights")]
    for config, _ in held:
        config.init_lora_weights = True
    try:
        yield
    finally:
        for config, init in held:
            config.init_lora_weights = init


def drop_reference_adapter(model: Any) -> None:
    """Delete TRL's frozen copy of the adapter: training is over, and a save would write it beside the result."""
    if REFERENCE_ADAPTER in getattr(model, "peft_config", {}):
        model.delete_adapter(REFERENCE_ADAPTER)


@contextlib.contextmanager
def reference_of(trainer: Any):
    """The model to score the reference with, as TRL computes it: the trainer's frozen copy of the starting model,
    else the policy with TRL's frozen copy of its adapter active, else the policy itself (before the first step it
    is the starting model)."""
    ref, model = getattr(trainer, "ref_model", None), trainer.model
    if ref is not None:
        yield ref
    elif REFERENCE_ADAPTER in getattr(model, "peft_config", {}):
        from trl.trainer.utils import use_adapter

        with use_adapter(model, REFERENCE_ADAPTER):
            yield model
    elif hasattr(model, "disable_adapter"):  # TRL found no copy to make (an old peft): it disables the adapter
        with model.disable_adapter():
            yield model
    else:
        yield model
