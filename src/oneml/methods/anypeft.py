"""Any peft tuner oneml has no file for: ``method: {name: peft, type: <PeftType name>, config: {...}}``.

The config is peft's own (https://huggingface.co/docs/peft), checked when the run config loads: an unknown type
is one line listing the known ones, a key that is not a field of that type's config class is one line naming it,
and peft's own validation of the values runs then too. The run is tracked, saved, loaded, exported (merged where
peft can: not for prompt learning or adaption prompts, and peft itself refuses some tuners' merge, which surfaces
as one line) and ranked in the guide like any method, at an unknown simplicity (rank 50: last among the ranked).
``task_type`` is always CAUSAL_LM. No diagnostics beyond the ones every run records.

What the rest of peft 0.21's tuners are for causal LMs (each trained 2 steps on a tiny Llama here):
- apply, through this escape hatch: ADAMSS, BEFT, CARTRIDGE (a trained KV cache, like prefix tuning: no gradient
  checkpointing, no merge), DEFT, FROD, GLORA, GRALORA, HIRA, LILY and SHADOW (no merge in peft), OSF, PEANUT,
  PSOFT, PVERA, SUPERTUNING, TINYLORA, UNILORA, WAVEFT (``n_frequency`` must fit the layer).
- do not apply: MULTITASK_PROMPT_TUNING and POLY (multi-task routing: every batch needs task ids, which oneml's
  batches do not carry), XLORA (a learned mixture of already-trained LoRA adapters, not a fine-tuning of a base),
  CPT (context-aware prompt tuning of few-shot classifiers: every example needs its token-type masks).
- LoRA initialisations and variants that are LoRA configs in peft (EVA, CorDA, LoftQ, LoRA-GA, Arrow, ...) belong
  to the LoRA family's keys, not here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from oneml.errors import OnemlError, did_you_mean
from oneml.methods import METHODS, MethodContext
from oneml.methods.tuners import PeftTuner, one_line

SET_BY_ONEML = frozenset({"task_type", "peft_type", "base_model_name_or_path", "revision", "inference_mode"})
"""peft config fields oneml sets itself (a causal LM, trained, on the run's model)."""
NO_CHECKPOINTING = frozenset({"PREFIX_TUNING", "CARTRIDGE"})
"""Tuners served as a KV cache, which gradient checkpointing drops from every checkpointed layer (see prefix.py)."""


def peft_types() -> dict[str, type]:
    """PeftType name -> peft's config class, for every tuner the installed peft has."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(getattr(t, "name", t)): cls for t, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()}


class AnyPeftConfig(PeftTuner):
    name: Literal["peft"] = "peft"
    complexity: ClassVar[tuple[float, str]] = (50, "a peft config oneml has no file for: unknown")
    type: str = "LORA"
    """peft's PeftType name (HIRA, GRALORA, ...; any case); default LORA, peft's LoraConfig."""
    config: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of that type's peft config class, e.g. {r: 8, target_modules: [q_proj, v_proj]}."""

    @model_validator(mode="after")
    def _known(self) -> AnyPeftConfig:
        self.peft_class()
        return self

    def peft_class(self) -> type:
        """peft's config class for ``type``, or a one-line error listing the known types."""
        types = peft_types()
        key = self.type.upper()
        if key not in types:
            raise OnemlError(
                f"method.type: unknown peft type {self.type!r}{did_you_mean(key, list(types))}; "
                f"known: {', '.join(sorted(types))}"
            )
        cls = types[key]
        fields = {f.name for f in dataclasses.fields(cls)} - SET_BY_ONEML
        for field in self.config:
            if field not in fields:
                raise OnemlError(
                    f"method.config.{field}: not a field of peft's {cls.__name__}{did_you_mean(field, sorted(fields))}"
                )
        try:  # peft's own validation of the values (block sizes, exclusive options), at load, not after loading
            cls(task_type="CAUSAL_LM", **self.config)
        except (TypeError, ValueError) as err:
            raise OnemlError(f"method.config: {cls.__name__}: {one_line(err)}") from None
        return cls

    @property
    def mergeable(self) -> bool:  # type: ignore[override]
        from peft import PromptLearningConfig

        cls = self.peft_class()
        return not issubclass(cls, PromptLearningConfig) and self.type.upper() not in ("ADAPTION_PROMPT", "XLORA")

    def peft_config(self, model: torch.nn.Module) -> Any:
        return self.peft_class()(task_type="CAUSAL_LM", **self.config)

    def check(self, ctx: MethodContext) -> None:
        super().check(ctx)
        if ctx.gradient_checkpointing and self.type.upper() in NO_CHECKPOINTING:
            raise OnemlError(
                f"method peft: gradient checkpointing is not supported with {self.type.upper()} (its prefix lives "
                "in the KV cache, which checkpointed layers drop); set train.gradient_checkpointing: false"
            )

    def twin(self) -> PeftTuner | None:
        """The oneml method that is this peft type (PROMPT_TUNING -> prompt_tuning), whose refusals apply here too."""
        for entry in METHODS.entries():
            if getattr(entry.value, "peft_type", None) == self.type.upper():
                return entry.value()
        return None

    def objective_refusal(self, objective: str) -> str | None:
        twin = self.twin()
        return twin.objective_refusal(objective) if twin else None

    def sharding_refusal(self) -> str | None:
        twin = self.twin()
        return twin.sharding_refusal() if twin else None

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        try:
            return super().merge(model)
        except (NotImplementedError, ValueError, AttributeError) as err:
            raise OnemlError(
                f"method peft: peft cannot merge a {self.type.upper()} adapter ({one_line(err)}); "
                "use the adapter unmerged (export --mode adapter)"
            ) from None


METHODS.register("peft", AnyPeftConfig, "peft: any peft tuner by its PeftType, with peft's own config (unranked)")
