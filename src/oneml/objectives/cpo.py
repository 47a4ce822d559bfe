"""CPO and SimPO: preference optimisation without a reference model, through TRL's CPOTrainer (trl.experimental.cpo).

CPO (contrastive preference optimisation, Xu et al. 2024, https://arxiv.org/abs/2401.08417):

    L = -log sigma( beta (log pi(y_w|x) - log pi(y_l|x)) ) + alpha * NLL(y_w)

SimPO (simple preference optimisation, Meng et al. 2024, https://arxiv.org/abs/2405.14734), the length-normalised
reward with a target margin gamma and no NLL term (TRL's CPO with ``loss_type=simpo`` and ``cpo_alpha=0``):

    L = -log sigma( beta (mean log pi(y_w|x) - mean log pi(y_l|x)) - gamma )

SimPO is registered as its own objective (``objective: {name: simpo}``), with the paper's scale as defaults (beta
2.0, gamma 1.0: gamma / beta = 0.5); a non-zero ``cpo_alpha`` adds CPO's NLL term (CPO-SimPO). ``cpo`` takes TRL's
other loss types (sigmoid, hinge, ipo, and simpo itself). Neither holds a reference, so policy-only memory. By default
the forward goes through our chunked LM head instead of the full (2B, T, V) logits (`chunked_forward`, as ORPO).
The held-out evaluation is the pairs' (`objectives.preference`) with `losses.cpo_loss`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from oneml.errors import OnemlError
from oneml.objectives import OBJECTIVES, TrainerInputs
from oneml.objectives.losses import cpo_loss
from oneml.objectives.orpo import CountingCollator
from oneml.objectives.preference import (
    PreferenceObjective,
    mean_std,
    preference_accuracy,
    shared_scores,
    trainer_common_args,
)

MEAN_LOGP_LOSSES = ("ipo", "simpo")
"""Loss types TRL's CPO scores with the completion's token-mean log-prob (the others: the sum)."""


class CPOFamily(PreferenceObjective):
    """What CPO and SimPO share: TRL's CPO trainer and the same evaluation."""

    beta: float = Field(default=0.1, gt=0)
    """Scale of the log-prob difference inside the sigmoid (IPO's tau)."""
    cpo_alpha: float = Field(default=1.0, ge=0)
    """Weight of the NLL of the chosen answer (CPO's behaviour-cloning term; 0 = none)."""
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5)
    """Conservative loss: the assumed share of flipped labels (sigmoid and simpo only)."""

    trl_loss: ClassVar[str] = "sigmoid"

    def loss_name(self) -> str:
        return self.trl_loss

    def margin(self) -> float:
        return 0.0

    @model_validator(mode="after")
    def _smoothing(self) -> CPOFamily:
        if self.label_smoothing and self.loss_name() not in ("sigmoid", "simpo"):
            raise OnemlError(
                f"objective.label_smoothing: the {self.loss_name()} loss ignores it; use loss_type sigmoid or simpo"
            )
        return self

    def build_trainer(self, inputs: TrainerInputs):
        from trl.experimental.cpo import CPOConfig

        args = CPOConfig(
            **trainer_common_args(inputs.args, inputs.max_length),
            beta=self.beta,
            cpo_alpha=self.cpo_alpha,
            loss_type=self.loss_name(),
            simpo_gamma=self.margin(),
            label_smoothing=self.label_smoothing,
        )
        trainer = _chunked_trainer()(
            model=inputs.model,
            args=args,
            train_dataset=inputs.train_dataset,
            eval_dataset=inputs.eval_dataset,
            processing_class=inputs.tokenizer,
            callbacks=inputs.callbacks,
            optimizers=inputs.optimizers,
        )
        trainer.data_collator = CountingCollator(trainer.data_collator)  # its pairs' tokens, counted on the host
        if inputs.speed.chunked_loss:
            from oneml.models.lm_head import install_chunked_head

            install_chunked_head(trainer.model, stats=("mean_logits",))
            trainer.chunked = True
        return trainer

    def scores(self, seq):
        mean = self.loss_name() in MEAN_LOGP_LOSSES
        chosen, rejected = seq["policy_chosen"], seq["policy_rejected"]
        if mean:
            chosen, rejected = chosen / seq["chosen_len"], rejected / seq["rejected_len"]
        term = cpo_loss(chosen, rejected, self.beta, self.loss_name(), self.label_smoothing, self.margin())
        nll = -seq["policy_chosen"] / seq["chosen_len"]  # per pair; TRL's is the token mean over the batch
        reward_chosen, reward_rejected = self.beta * chosen, self.beta * rejected  # TRL's CPO rewards
        margin_mean, margin_std = mean_std(reward_chosen - reward_rejected)
        return shared_scores(seq) | {
            "loss": float((term + self.cpo_alpha * nll).mean()),
            "preference_accuracy": preference_accuracy(reward_chosen - reward_rejected),
            "reward_margin": margin_mean,
            "reward_margin_std": margin_std,
            "reward_chosen": float(reward_chosen.mean()),
            "reward_rejected": float(reward_rejected.mean()),
        }


class CPOObjective(CPOFamily):
    name: Literal["cpo"] = "cpo"
    loss_type: Literal["sigmoid", "hinge", "ipo", "simpo"] = "sigmoid"
    """sigmoid (CPO), hinge (SLiC), ipo (IPO on mean log-probs) or simpo (SimPO's term; see objective simpo)."""
    simpo_gamma: float = Field(default=0.5, ge=0)
    """SimPO's target margin gamma, with loss_type simpo only."""

    def loss_name(self) -> str:
        return self.loss_type

    def margin(self) -> float:
        return self.simpo_gamma

    @model_validator(mode="after")
    def _gamma(self) -> CPOObjective:
        # Against the default, not the keys given: a config read back from a run's record gives every key.
        if self.simpo_gamma != type(self).model_fields["simpo_gamma"].default and self.loss_type != "simpo":
            raise OnemlError(f"objective.simpo_gamma: only loss_type simpo uses it, got loss_type {self.loss_type}")
        return self


class SimPOObjective(CPOFamily):
    name: Literal["simpo"] = "simpo"
    beta: float = Field(default=2.0, gt=0)
    """Scale of the mean log-prob difference (the paper: 2.0 to 2.5)."""
    gamma: float = Field(default=1.0, ge=0)
    """Target reward margin (the paper keeps gamma / beta near 0.5)."""
    cpo_alpha: float = Field(default=0.0, ge=0)
    """Weight of CPO's NLL term on the chosen answer (0 = SimPO; above 0 = CPO-SimPO)."""

    trl_loss = "simpo"

    def margin(self) -> float:
        return self.gamma


def chunked_forward(trainer, model, batch):
    """TRL's CPO ``concatenated_forward`` from one pass of per-token log-probs instead of (2B, T, V) logits.

    The labels mask the prompt, so the log-probs are the completion's: summed, or token-mean for ipo/simpo; the NLL
    is the chosen side's token mean (TRL's cross-entropy over its labels). The logged "logits" are the mean logit of
    each completion token.
    """
    cat = trainer.concatenated_inputs(
        batch, is_encoder_decoder=False, padding_value=trainer.pad_token_id, device=trainer.accelerator.device
    )
    n = batch["chosen_labels"].shape[0]
    ids, mask, labels = cat["concatenated_input_ids"], cat["concatenated_attention_mask"], cat["concatenated_labels"]
    out = model(ids, attention_mask=mask, labels=labels, fused_lm_head=True, use_cache=False)
    logps, real = out.log_probs, out.label_mask  # (2B, T-1)
    sums = logps.sum(-1)  # (2B,)
    if trainer.loss_type in MEAN_LOGP_LOSSES:
        sums = sums / real.sum(-1).clamp(min=1)
    nll = -logps[:n].sum() / real[:n].sum().clamp(min=1) if trainer.cpo_alpha else logps.new_zeros(())
    means = out.mean_logits
    return sums[:n], sums[n:], means[:n][real[:n]], means[n:][real[n:]], nll


def _chunked_trainer():
    """CPOTrainer whose forward goes through our chunked head when the model carries it. Its override is listed in
    train/hooks.py `PATCHED` (a test checks it still exists in TRL)."""
    from trl.experimental.cpo import CPOTrainer

    class ChunkedCPOTrainer(CPOTrainer):
        chunked = False
        """True when the model carries our chunked head: the forward below then never builds the logits."""

        def concatenated_forward(self, model, batch):
            if not self.chunked or self.is_encoder_decoder or self.aux_loss_enabled:
                return super().concatenated_forward(model, batch)
            return chunked_forward(self, model, batch)

    return ChunkedCPOTrainer


OBJECTIVES.register("cpo", CPOObjective, "CPO: preference pairs, no reference: log-prob gap + NLL of the chosen (beta)")
OBJECTIVES.register("simpo", SimPOObjective, "SimPO: preference pairs, no reference: mean log-prob gap with a margin")
