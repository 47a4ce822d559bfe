"""Training objectives: sft; preference pairs (dpo with TRL's loss types, orpo, cpo, simpo); unpaired answers (kto);
a reward model (reward).

An objective says how its data is prepared, builds the trainer for it, and evaluates a model on
its held-out data, so the run assembly in `train/` never branches on an objective's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from oneml.registry import Registry, import_submodules
from oneml.schema import Section
from oneml.tracking.tags import SWITCH_PREFIX


@dataclass(frozen=True)
class Speed:
    """The speed switches a run actually uses, each with the reason when a requested one is off."""

    packing: bool = False
    packing_reason: str = ""
    chunked_loss: bool = False
    chunked_reason: str = ""

    def tags(self) -> dict[str, str]:
        tags = {f"{SWITCH_PREFIX}packing": str(self.packing).lower()}
        tags[f"{SWITCH_PREFIX}chunked_loss"] = str(self.chunked_loss).lower()
        reasons = {"packing": self.packing_reason, "chunked_loss": self.chunked_reason}
        return tags | {f"{SWITCH_PREFIX}{k}_off_reason": v for k, v in reasons.items() if v}


@dataclass(frozen=True)
class TrainerInputs:
    """Everything the runner hands an objective to build its trainer with."""

    model: Any
    """The model after the method applied (a peft model for adapter methods)."""
    tokenizer: Any
    train_dataset: Any
    eval_dataset: Any
    args: dict[str, Any]
    """Trainer arguments common to every objective (train/arguments.py)."""
    callbacks: list[Any]
    optimizers: tuple[Any, Any]
    """(optimizer or None, scheduler or None): a method's own parameter groups (LoRA+) come as an optimizer."""
    max_length: int
    speed: Speed
    """Whether to pack batches and to use the chunked LM head (resolved for this model)."""
    ref_model: Any = None
    """A frozen reference copy, when the objective asked for one (`reference_model`)."""


class ObjectiveConfig(Section):
    name: str
    data_kind: ClassVar[str] = "sft"
    """"sft" (conversations), "preference" (prompt, chosen, rejected) or "unpaired" (prompt, completion, label)."""
    eval_metrics: ClassVar[tuple[str, ...]] = ("eval_loss", "eval_perplexity", "eval_token_accuracy")
    """The quality metrics its evaluation records on the validation rows, whose direction the analysis registry
    knows: what selection (early stopping, halving rungs, tuning) may rank by."""
    head: ClassVar[str] = "lm"
    """The model it trains: "lm" (a causal LM, which generates) or "score" (one scalar per sequence: a reward model)."""
    identity_defaults: ClassVar[tuple[str, ...]] = ()
    """Keys added after runs had been recorded: left out of the run id while at their default, so that every config
    written before them keeps its run id (config.py)."""
    key_choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    """The allowed values of keys whose type does not list them (DPO's loss_type), for `oneml objectives`."""

    def for_method(self, method: Any) -> ObjectiveConfig:
        """This config with the defaults that depend on the method resolved (DPO's reference: auto); the run config
        keeps the resolved one, so its record says what ran."""
        return self

    def check(self, method: Any) -> None:
        """Refuse an incompatible method (OnemlError) before anything is loaded."""

    def check_run(self, config: Any) -> None:
        """Refuse run settings (``config``: the RunConfig) this objective cannot train with, before anything loads."""

    def with_head(self, model: Any) -> Any:
        """``model`` (a causal LM, as loaded) turned into the model this objective trains; the same model for "lm"."""
        return model

    packs: ClassVar[bool] = False
    """True when this objective's batches can be padding-free packed (`oneml.data.packing`)."""
    gathers_eval: ClassVar[bool] = False
    """True when its held-out evaluation gathers across processes, so a run may span several (distributed/)."""

    def speed(self, model: Any, config: Any) -> Speed:
        """The switches this run uses on ``model`` (after the method applied), from ``config`` (a RunConfig)."""
        from oneml.data.packing import packing_problem
        from oneml.models.lm_head import unsupported_reason

        packing, packing_reason = config.data.packing, ""
        if packing and not self.packs:
            packing, packing_reason = False, f"{self.name} batches are not packed"
        elif packing:
            packing_reason = packing_problem(model) or ""
            packing = not packing_reason
        chunked, chunked_reason = config.train.chunked_loss, ""
        if chunked:
            chunked_reason = unsupported_reason(model) or ""
            chunked = not chunked_reason
        return Speed(packing, packing_reason, chunked, chunked_reason)

    def prepare(self, data_cfg: Any, tokenizer: Any) -> Any:
        """Train/eval datasets for this objective (a `oneml.data.PreparedData`)."""
        raise NotImplementedError

    def reference_model(self, model: Any, method: Any) -> Any:
        """A frozen reference built from the starting model (before ``method`` applies), or None."""
        return None

    def reference_scored(self, trainer: Any) -> None:
        """Every evaluation has scored the reference (before the first step): drop what only that needed."""

    def finished(self, trainer: Any) -> None:
        """Training is over: drop what only training needed (TRL's frozen copy of the adapter) before saving."""

    def build_trainer(self, inputs: TrainerInputs) -> Any:
        """Return a transformers Trainer for this objective (see `oneml.train.runner`)."""
        raise NotImplementedError

    def evaluator(self, trainer: Any, data: Any, tokenizer: Any, max_length: int) -> Any:
        """An object with ``prepare()`` (called once before training) and ``__call__(prefix) -> metrics``."""
        raise NotImplementedError


OBJECTIVES: Registry[type[ObjectiveConfig]] = Registry("objective")

import_submodules(__name__, __path__, skip={"losses", "preference", "reference", "listing"})  # helpers, not entries
