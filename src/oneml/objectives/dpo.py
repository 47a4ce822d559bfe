"""DPO: direct preference optimisation (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290).

    L = -log sigma( beta * ((log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))) )

``loss_type`` picks any loss TRL's DPOTrainer has instead of the sigmoid above (IPO, hinge, robust, EXO, NCA, BCO,
SPPO, AOT, APO, DiscoPOP, SFT, length-normalised sigmoid); several at once are summed with ``loss_weights`` (MPO).
The reference is the starting point of the run (`objectives.reference`: the adapter's frozen copy, a copy of the
model, or log-probs computed once). TRL's DPOTrainer trains (its per-token log-probs through our chunked LM head by
default, `oneml.models.lm_head`). The held-out evaluation scores every loss type the same way, with the sigmoid loss
above as ``eval_loss`` (`losses.dpo_loss`, the formula the tests hold TRL to), so loss types compare on one scale.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from oneml.errors import OnemlError
from oneml.objectives import OBJECTIVES, TrainerInputs
from oneml.objectives.losses import dpo_loss
from oneml.objectives.preference import (
    PreferenceObjective,
    mean_std,
    preference_accuracy,
    shared_scores,
    trainer_common_args,
)
from oneml.objectives.reference import UsesReference, copies_without_init

DPO_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip
"""TRL 1.16's DPOTrainer loss types (a test reads them from DPOConfig's documentation, so a TRL upgrade shows)."""
SMOOTHED = ("sigmoid", "robust", "exo_pair", "aot", "aot_unpaired")
"""Loss types that read label_smoothing (sigmoid only to turn into robust, as before loss_type existed)."""


class DPOObjective(UsesReference, PreferenceObjective):
    name: Literal["dpo"] = "dpo"
    beta: float = Field(default=0.1, gt=0)
    """Strength of the pull towards the reference (higher = stay closer; IPO's tau)."""
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5)
    """Conservative DPO: the assumed share of flipped preference labels (with loss_type sigmoid: the robust loss);
    EXO's epsilon for exo_pair."""
    loss_type: str | list[str] = "sigmoid"
    """TRL's DPO loss: sigmoid, ipo, hinge, robust, ... (`oneml objectives` lists them), or a list of several,
    summed with loss_weights."""
    loss_weights: list[float] | None = None
    """One weight per loss_type when several are combined (default: 1 each)."""

    identity_defaults = ("loss_type", "loss_weights")
    key_choices = {"loss_type": DPO_LOSS_TYPES}

    @field_validator("loss_type")
    @classmethod
    def _known(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("needs at least one loss type")
        for name in names:
            if name not in DPO_LOSS_TYPES:
                raise ValueError(f"must be one of {', '.join(DPO_LOSS_TYPES)}, got {name!r}")
        return names[0] if len(names) == 1 else names  # [sigmoid] is sigmoid: the same run id

    @model_validator(mode="after")
    def _consistent(self) -> DPOObjective:
        types = self.loss_types()
        if self.loss_weights is not None and len(self.loss_weights) != len(types):
            raise OnemlError(
                f"objective.loss_weights: needs one weight per loss_type ({len(types)}), got {len(self.loss_weights)}"
            )
        if self.label_smoothing and not set(types) & set(SMOOTHED):
            raise OnemlError(
                f"objective.label_smoothing: only loss types {', '.join(SMOOTHED)} use it, got {', '.join(types)}"
            )
        if "exo_pair" in types and not self.label_smoothing:
            raise OnemlError(
                "objective.label_smoothing: exo_pair needs it above 0 (EXO's epsilon; the paper suggests 1e-3)"
            )
        return self

    def loss_types(self) -> list[str]:
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)

    def trl_loss_types(self) -> list[str]:
        """What TRL trains: label smoothing on the plain sigmoid loss is the robust loss (as before loss_type)."""
        return ["robust" if t == "sigmoid" and self.label_smoothing else t for t in self.loss_types()]

    def build_trainer(self, inputs: TrainerInputs):
        from trl import DPOConfig, DPOTrainer

        dpo_args = DPOConfig(
            **trainer_common_args(inputs.args, inputs.max_length),
            beta=self.beta,
            label_smoothing=self.label_smoothing,
            loss_type=self.trl_loss_types(),
            loss_weights=self.loss_weights,
            precompute_ref_log_probs=self.reference == "precomputed",
        )
        with copies_without_init(inputs.model):
            trainer = DPOTrainer(
                model=inputs.model,
                ref_model=inputs.ref_model,
                args=dpo_args,
                train_dataset=inputs.train_dataset,
                eval_dataset=inputs.eval_dataset,
                processing_class=inputs.tokenizer,
                callbacks=inputs.callbacks,
                optimizers=inputs.optimizers,
            )
        if inputs.speed.chunked_loss:
            from oneml.models.head_backends import training_log_probs
            from oneml.models.lm_head import install_chunked_head

            # TRL logs the policy's entropy, mean logit and top-1 accuracy; of the reference it reads log-probs only.
            policy = training_log_probs(inputs.speed.lm_head)
            install_chunked_head(trainer.model, stats=("entropy", "mean_logits", "is_top1"), log_probs=policy)
            if trainer.ref_model is not None:
                install_chunked_head(trainer.ref_model, stats=())
        return trainer

    def scores(self, seq):
        loss, chosen, rejected = dpo_loss(
            seq["policy_chosen"], seq["policy_rejected"], seq["ref_chosen"], seq["ref_rejected"], self.beta
        )
        margin_mean, margin_std = mean_std(chosen - rejected)
        # KL(pi || ref) estimated on the dataset's completions: mean sequence log-ratio over both sides.
        log_ratios = (chosen + rejected) / (2 * self.beta)
        return shared_scores(seq) | {
            "loss": float(loss.mean()),
            "preference_accuracy": preference_accuracy(chosen - rejected),
            "reward_margin": margin_mean,
            "reward_margin_std": margin_std,
            "reward_chosen": float(chosen.mean()),
            "reward_rejected": float(rejected.mean()),
            "kl_ref": float(log_ratios.mean()),
        }


OBJECTIVES.register("dpo", DPOObjective, "DPO: preference pairs against a frozen reference (beta)")
