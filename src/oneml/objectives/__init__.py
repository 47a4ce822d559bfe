"""Training objectives: sft; preference pairs (dpo with TRL's loss types, orpo, cpo, simpo); unpaired answers (kto);
a reward model (reward).

An objective says how its data is prepared, builds the trainer for it, and evaluates a model on
its held-out data, so the run assembly in `train/` never branches on an objective's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from oneml.errors import OnemlError
from oneml.registry import Registry, import_submodules
from oneml.schema import Section
from oneml.tracking.tags import SWITCH_PREFIX


@dataclass(frozen=True)
class Speed:
    """The speed switches a run actually uses, each with the reason when a requested one is off."""

    packing: bool = False
    packing_reason: str = ""
    chunked_loss: bool = False
    """Our model-level head is installed (`oneml.models.lm_head`), serving ``lm_head``."""
    chunked_reason: str = ""
    lm_head: str = "ours"
    """Which head computes the training loss: ours, liger, cce (through our model-level head), or the trainer's
    own: trl (TRL's fused head) or logits (full logits)."""
    attention: str = ""
    """The attention implementation the model runs (`oneml.models.attention`)."""

    def tags(self) -> dict[str, str]:
        tags = {f"{SWITCH_PREFIX}packing": str(self.packing).lower()}
        tags[f"{SWITCH_PREFIX}chunked_loss"] = str(self.chunked_loss).lower()
        tags[f"{SWITCH_PREFIX}lm_head"] = self.lm_head
        if self.attention:
            tags[f"{SWITCH_PREFIX}attn_implementation"] = self.attention
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
    trainer_head: ClassVar[str] = "trl"
    """The head its TRL trainer computes the loss with when ours is off: trl (TRL's fused head) or logits."""

    def speed(self, model: Any, config: Any) -> Speed:
        """The switches this run uses on ``model`` (after the method applied), from ``config`` (a RunConfig).
        A head that cannot run here (liger off CUDA, say) is refused in one line rather than silently replaced."""
        from oneml.data.packing import packing_problem
        from oneml.models import attention

        packing, packing_reason = config.data.packing, ""
        if packing and not self.packs:
            packing, packing_reason = False, f"{self.name} batches are not packed"
        elif packing:
            packing_reason = packing_problem(model) or ""
            packing = not packing_reason
        head, chunked, chunked_reason = self._head(model, config.train.chunked_loss)
        return Speed(packing, packing_reason, chunked, chunked_reason, head, attention.in_use(model))

    def _head(self, model: Any, choice: bool | str) -> tuple[str, bool, str]:
        """(head used, our model-level head installed, why the requested one is off)."""
        from oneml.models.head_backends import HEADS, resolve
        from oneml.models.lm_head import unsupported_reason

        device = next(model.parameters()).device.type
        head = resolve(choice, device)
        if head is None or head == "trl":
            if head == "trl" and self.trainer_head != "trl":
                raise OnemlError(f"train.chunked_loss: trl: TRL's {self.name} trainer has no fused head; use ours/off")
            return self.trainer_head, False, ""
        reason = HEADS.get(head).unavailable(device, model)
        if reason is not None:
            raise OnemlError(f"train.chunked_loss: {head} {reason}")
        reason = unsupported_reason(model)
        return (self.trainer_head, False, reason) if reason else (head, True, "")

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
