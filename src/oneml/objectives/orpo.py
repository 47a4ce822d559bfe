"""ORPO: odds-ratio preference optimisation (Hong et al. 2024, https://arxiv.org/abs/2403.07691).

    L = L_SFT(y_w) + lambda * -log sigma( log odds(y_w|x) - log odds(y_l|x) ),   odds = p / (1 - p)

with p the completion's length-normalised likelihood. No reference model: SFT and preference in one
stage, so policy-only memory. TRL's ORPOTrainer (trl.experimental.orpo) trains, where the weight
lambda is called beta; by default its forward goes through our chunked LM head instead of the full
(2B, T, V) logits (`chunked_forward`). `losses.orpo_loss` is the formula the tests hold it to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict, Field

from oneml.objectives import OBJECTIVES, TrainerInputs
from oneml.objectives.losses import orpo_loss
from oneml.objectives.preference import (
    PreferenceObjective,
    mean_std,
    preference_accuracy,
    shared_scores,
    trainer_common_args,
)


class ORPOObjective(PreferenceObjective):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    name: Literal["orpo"] = "orpo"
    trainer_head = "logits"  # TRL's ORPO trainer builds the full (2B, T, V) logits
    lambda_: float = Field(default=0.1, gt=0, alias="lambda")
    """Weight of the odds-ratio term against the SFT term (`lambda` in YAML)."""

    def build_trainer(self, inputs: TrainerInputs):
        from trl.experimental.orpo import ORPOConfig

        orpo_args = ORPOConfig(**trainer_common_args(inputs.args, inputs.max_length), beta=self.lambda_)
        trainer = _chunked_trainer()(
            model=inputs.model,
            args=orpo_args,
            train_dataset=inputs.train_dataset,
            eval_dataset=inputs.eval_dataset,
            processing_class=inputs.tokenizer,
            callbacks=inputs.callbacks,
            optimizers=inputs.optimizers,
        )
        trainer.data_collator = CountingCollator(trainer.data_collator)
        if inputs.speed.chunked_loss:
            from oneml.models.head_backends import training_log_probs
            from oneml.models.lm_head import install_chunked_head

            policy = training_log_probs(inputs.speed.lm_head)
            install_chunked_head(trainer.model, stats=("mean_logits",), log_probs=policy)
            trainer.chunked = True
        return trainer

    def scores(self, seq):
        chosen_mean = seq["policy_chosen"] / seq["chosen_len"]
        rejected_mean = seq["policy_rejected"] / seq["rejected_len"]
        loss, ratio = orpo_loss(-chosen_mean, chosen_mean, rejected_mean, self.lambda_)
        # TRL's ORPO reward: lambda * mean log-prob of each completion.
        chosen, rejected = self.lambda_ * chosen_mean, self.lambda_ * rejected_mean
        ratio_mean, ratio_std = mean_std(ratio)
        margin_mean, margin_std = mean_std(chosen - rejected)
        return shared_scores(seq) | {
            "loss": float(loss.mean()),
            "sft_loss": float(-chosen_mean.mean()),
            "preference_accuracy": preference_accuracy(ratio),
            "log_odds_ratio_mean": ratio_mean,
            "log_odds_ratio_std": ratio_std,
            "reward_margin": margin_mean,
            "reward_margin_std": margin_std,
            "reward_chosen": float(chosen.mean()),
            "reward_rejected": float(rejected.mean()),
        }


def chunked_forward(trainer, model, batch):
    """TRL's ORPO ``concatenated_forward`` from one pass of per-token log-probs instead of (2B, T, V) logits.

    ORPO's NLL is over every real token of the chosen side (prompt included, TRL's choice) and its
    odds use the completion-token mean; both come from the same per-token log-probs. The logged
    "logits" are the mean logit of each real token (TRL averages over padding too).
    """
    cat = trainer.concatenated_inputs(
        batch, is_encoder_decoder=False, padding_value=trainer.padding_value, device=trainer.accelerator.device
    )
    n = batch["chosen_labels"].shape[0]
    ids, mask = cat["concatenated_input_ids"], cat["concatenated_attention_mask"]  # (2B, T)
    out = model(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100), fused_lm_head=True, use_cache=False)
    logps, real = out.log_probs, out.label_mask  # (2B, T-1)
    chosen_nll = -logps[:n].sum() / real[:n].sum().clamp(min=1)
    completion = cat["concatenated_labels"][:, 1:] != -100  # (2B, T-1)
    mean = (logps * completion).sum(-1) / completion.sum(-1).clamp(min=1)  # (2B,)
    means = out.mean_logits
    return mean[:n], mean[n:], means[:n][real[:n]], means[n:][real[n:]], chosen_nll


@dataclass
class CountingCollator:
    """TRL's preference collator, plus the batch's real (unpadded) tokens of both sides under `REAL_TOKENS`.

    ORPO's batches carry chosen_/rejected_ keys, not input_ids, so the Trainer's own token count stays 0; the count
    is taken here, on the host where the batch is built, and train/hooks.py adds it up without a device sync."""

    collate: Any

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        from oneml.data.packing import REAL_TOKENS

        batch = self.collate(examples)
        masks = [batch.get(f"{side}_attention_mask") for side in ("chosen", "rejected")]
        return batch | {REAL_TOKENS: sum(int(mask.sum()) for mask in masks if mask is not None)}


def _chunked_trainer():
    """ORPOTrainer whose forward goes through our chunked head when the model carries it. Its override is listed in
    train/hooks.py `PATCHED` (a test checks it still exists in TRL)."""
    from trl.experimental.orpo import ORPOTrainer

    class ChunkedORPOTrainer(ORPOTrainer):
        chunked = False
        """True when the model carries our chunked head: the forward below then never builds the logits."""

        def concatenated_forward(self, model, batch):
            if not self.chunked or self.is_encoder_decoder or self.aux_loss_enabled:
                return super().concatenated_forward(model, batch)
            return chunked_forward(self, model, batch)

    return ChunkedORPOTrainer


OBJECTIVES.register("orpo", ORPOObjective, "ORPO: SFT + odds-ratio preference term in one stage, no reference (lambda)")
