"""KTO: Kahneman-Tversky optimisation (Ethayarajh et al. 2024, https://arxiv.org/abs/2402.01306).

Learns from answers judged one at a time, desirable or not (no pairs needed), against a frozen reference:

    r = log pi(y|x) - log ref(y|x),   z0 = max(0, KL(pi || ref) estimated on mismatched (x, y') of the batch)
    L = w_D (1 - sigma(beta (r - z0)))  for desirable y,   w_U (1 - sigma(beta (z0 - r)))  for undesirable y

Data: KTO rows (prompt/completion or messages + ``label``), or preference pairs, each giving its chosen answer as
desirable and its rejected one as undesirable (TRL's ``unpair_preference_dataset``). ``desirable_weight`` /
``undesirable_weight`` balance unequal counts (the paper suggests w_D n_D / (w_U n_U) in [1, 4/3]); the run records
both counts (``data.stats.desirable``, ``undesirable``). ``loss_type: apo_zero_unpaired`` trains APO-zero instead.
The reference is the starting model, kept as ``objective.reference`` says (`objectives.reference`, as DPO). TRL's
KTOTrainer trains; the held-out evaluation (`objectives.unpaired`) scores every answer and every pair among them with
`losses.kto_loss`, the formula the tests hold TRL to.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from oneml.errors import OnemlError
from oneml.objectives import OBJECTIVES, TrainerInputs
from oneml.objectives.losses import kto_loss
from oneml.objectives.preference import mean_std, preference_accuracy, trainer_common_args
from oneml.objectives.reference import UsesReference, copies_without_init


class KTOObjective(UsesReference):
    name: Literal["kto"] = "kto"
    beta: float = Field(default=0.1, gt=0)
    """Strength of the pull towards the reference (higher = stay closer)."""
    desirable_weight: float = Field(default=1.0, gt=0)
    """Weight of the desirable answers' losses (w_D)."""
    undesirable_weight: float = Field(default=1.0, gt=0)
    """Weight of the undesirable answers' losses (w_U)."""
    loss_type: Literal["kto", "apo_zero_unpaired"] = "kto"
    """kto, or apo_zero_unpaired (APO-zero: no KL term; for answers better than the model's own)."""

    data_kind = "unpaired"  # type: ignore[assignment]
    # Its pair accuracy exists only where its answers come in pairs; every KTO evaluation records these.
    eval_metrics = ("eval_loss", "eval_label_accuracy", "eval_reward_margin")  # type: ignore[assignment]

    def check_run(self, config: Any) -> None:
        if self.loss_type == "kto" and config.train.batch_size < 2:
            raise OnemlError(
                "train.batch_size: KTO estimates its KL term from the other answers of a batch, so it needs at least "
                f"2 per device, got {config.train.batch_size} (or objective.loss_type: apo_zero_unpaired)"
            )

    def prepare(self, data_cfg, tokenizer):
        from oneml.data import prepare_unpaired

        return prepare_unpaired(data_cfg, tokenizer, objective=self.name)

    def build_trainer(self, inputs: TrainerInputs):
        from trl import KTOConfig, KTOTrainer

        args = KTOConfig(
            **trainer_common_args(inputs.args, inputs.max_length),
            beta=self.beta,
            desirable_weight=self.desirable_weight,
            undesirable_weight=self.undesirable_weight,
            loss_type=self.loss_type,
            precompute_ref_log_probs=self.reference == "precomputed",
        )
        with copies_without_init(inputs.model):
            trainer = KTOTrainer(
                model=inputs.model,
                ref_model=inputs.ref_model,
                args=args,
                train_dataset=inputs.train_dataset,
                eval_dataset=inputs.eval_dataset,
                processing_class=inputs.tokenizer,
                callbacks=inputs.callbacks,
                optimizers=inputs.optimizers,
            )
        if inputs.speed.chunked_loss:
            from oneml.models.lm_head import install_chunked_head

            # TRL logs the policy's entropy and mean logit; of the reference it reads log-probs only.
            install_chunked_head(trainer.model, stats=("entropy", "mean_logits"))
            if trainer.ref_model is not None:
                install_chunked_head(trainer.ref_model, stats=())
        return trainer

    def evaluator(self, trainer, data, tokenizer, max_length):
        from oneml.objectives.unpaired import UnpairedEvaluator

        return UnpairedEvaluator(trainer, data.eval, tokenizer, max_length, self)

    def scores(self, seq: dict[str, torch.Tensor]) -> dict[str, float]:
        """KTO's loss and rewards on every held-out answer, and preference accuracy on the pairs among them."""
        desirable, pairs = seq["desirable"], seq["pairs"]
        kl = (seq["policy_mismatch"] - seq["ref_mismatch"]).mean()
        loss, reward = kto_loss(
            seq["policy_completion"], seq["ref_completion"], desirable, kl, self.beta,
            self.desirable_weight, self.undesirable_weight, self.loss_type,
        )  # fmt: skip
        mean_logp = seq["policy_completion"] / seq["completion_len"].clamp(min=1)
        out = {
            "loss": float(loss.mean()),
            "kl_ref": float((reward / self.beta).mean()),  # as DPO's: the mean log-ratio on the data's answers
            "kto_kl": float(kl.clamp(min=0)) if self.loss_type == "kto" else 0.0,
            "label_accuracy": preference_accuracy(torch.where(desirable, reward, -reward)),
            **_side_means(reward, mean_logp, desirable),
        }
        if len(pairs):  # pairs scored as DPO scores them: the chosen answer's implicit reward above the rejected's
            margin = reward[pairs[:, 0]] - reward[pairs[:, 1]]
            margin_mean, margin_std = mean_std(margin)
            out |= {"preference_accuracy": preference_accuracy(margin), "reward_margin_std": margin_std}
            out["logp_accuracy"] = float((mean_logp[pairs[:, 0]] > mean_logp[pairs[:, 1]]).double().mean())
            out["reward_margin"] = margin_mean
        return out


def _side_means(reward: torch.Tensor, mean_logp: torch.Tensor, desirable: torch.Tensor) -> dict[str, float]:
    """Rewards and mean token log-probs of the desirable (chosen) and undesirable (rejected) answers; the margin is
    their difference (TRL's rewards/margins), replaced by the per-pair margin where there are pairs."""
    nan = float("nan")

    def mean(x: torch.Tensor) -> float:
        return float(x.mean()) if x.numel() else nan

    chosen, rejected = mean(reward[desirable]), mean(reward[~desirable])
    return {
        "reward_chosen": chosen,
        "reward_rejected": rejected,
        "reward_margin": chosen - rejected,
        "chosen_logp": mean(mean_logp[desirable]),
        "rejected_logp": mean(mean_logp[~desirable]),
        "chosen_nll": -mean(mean_logp[desirable]),
    }


OBJECTIVES.register("kto", KTOObjective, "KTO: answers judged desirable or not one by one, against a reference (beta)")
