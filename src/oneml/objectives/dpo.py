"""DPO: direct preference optimisation (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290).

    L = -log sigma( beta * ((log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))) )

The reference is the starting point of the run (the base, or the model an earlier SFT run left):
- ``reference: adapter`` (default with adapter methods): the policy with its adapter disabled, so no
  second copy of the weights is held (policy-only memory);
- ``reference: copy``: a frozen copy of the starting model (policy + reference memory; needed for
  full fine-tuning);
- ``reference: precomputed``: reference log-probs computed once over the training pairs before
  training, then no reference model at all during training.
TRL's DPOTrainer trains (its per-token log-probs through our chunked LM head by default,
`oneml.models.lm_head`); `losses.dpo_loss` is the formula the tests hold it to.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

from pydantic import Field

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


class DPOObjective(PreferenceObjective):
    name: Literal["dpo"] = "dpo"
    beta: float = Field(default=0.1, gt=0)
    """Strength of the pull towards the reference (higher = stay closer)."""
    reference: Literal["adapter", "copy", "precomputed"] = "adapter"
    """adapter: the adapter-disabled policy; copy: a frozen copy; precomputed: log-probs computed once."""
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5)
    """Conservative DPO: the assumed share of flipped preference labels."""

    needs_reference: ClassVar[bool] = True

    def check(self, method: Any) -> None:
        if self.reference == "adapter" and not method.is_adapter:
            raise OnemlError(
                f"objective.reference: 'adapter' needs an adapter method, not {method.name}; "
                "use reference: copy or precomputed"
            )

    def reference_model(self, model):
        if self.reference != "copy":
            return None
        ref = copy.deepcopy(model).eval()
        for param in ref.parameters():
            param.requires_grad_(False)
        return ref

    def build_trainer(self, inputs: TrainerInputs):
        from trl import DPOConfig, DPOTrainer

        dpo_args = DPOConfig(
            **trainer_common_args(inputs.args, inputs.max_length),
            beta=self.beta,
            label_smoothing=self.label_smoothing,
            loss_type=["robust"] if self.label_smoothing else ["sigmoid"],
            precompute_ref_log_probs=self.reference == "precomputed",
        )
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
