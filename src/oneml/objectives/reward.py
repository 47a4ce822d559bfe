"""Reward modelling: a scalar score per answer, trained on preference pairs (TRL's RewardTrainer).

    r(x, y) = w^T h_last(x, y)          (h_last: the decoder's hidden state at the sequence's last real token)
    L = -log sigma( r(x, y_w) - r(x, y_l) )  [+ c * (r(x, y_w) + r(x, y_l))^2  with center_rewards_coefficient c]

The model is the base (or the model an earlier run left) with its LM head replaced by a one-output score head w
(transformers' sequence-classification class of the same architecture; the decoder's weights are shared, not copied;
w starts as N(0, initializer_range), seeded). Adapter methods train through peft's SEQ_CLS task, which trains and
saves w with the adapter; full fine-tuning trains everything. The result scores, it does not generate: `oneml eval`
refuses generation and log-likelihood benchmarks for it in one line, `oneml export` writes the scoring model.
The held-out evaluation scores every pair: accuracy (r(y_w) > r(y_l), a tie counting half), the margin
r(y_w) - r(y_l) (mean, std), the mean rewards and the loss (`losses.bradley_terry_loss`).
"""

from __future__ import annotations

import copy
import time
from typing import Any, Literal

import torch
from pydantic import Field

from oneml.errors import OnemlError
from oneml.objectives import OBJECTIVES, Speed, TrainerInputs
from oneml.objectives.losses import bradley_terry_loss
from oneml.objectives.preference import PreferenceObjective, mean_std, preference_accuracy


class RewardObjective(PreferenceObjective):
    name: Literal["reward"] = "reward"
    center_rewards_coefficient: float | None = Field(default=None, gt=0)
    """Pull the mean reward of each pair towards 0 with this weight (TRL's; Eisenstein et al. 2023); unset = off."""

    head = "score"  # type: ignore[assignment]

    def speed(self, model: Any, config: Any) -> Speed:
        off = "a reward model's score head has no vocabulary to chunk"
        packing = "reward pairs are not packed" if config.data.packing else ""
        return Speed(False, packing, False, off if config.train.chunked_loss else "")

    def with_head(self, model: Any) -> Any:
        return score_model(model)

    def build_trainer(self, inputs: TrainerInputs):
        from trl import RewardConfig, RewardTrainer

        args = RewardConfig(
            **inputs.args,
            # The data layer already cut each pair to data.max_length; TRL would drop (not cut) any pair its added
            # end-of-sequence token takes one over.
            max_length=None,
            center_rewards_coefficient=self.center_rewards_coefficient,
            remove_unused_columns=False,
        )
        trainer = RewardTrainer(
            model=inputs.model,
            args=args,
            train_dataset=inputs.train_dataset,
            eval_dataset=inputs.eval_dataset,
            processing_class=inputs.tokenizer,
            callbacks=inputs.callbacks,
            optimizers=inputs.optimizers,
        )
        _head_in_model_dtype(trainer.model)
        return trainer

    def evaluator(self, trainer, data, tokenizer, max_length):
        return RewardEvaluator(trainer, data.eval, tokenizer, self)

    def scores(self, seq: dict[str, torch.Tensor]) -> dict[str, float]:
        chosen, rejected = seq["chosen"], seq["rejected"]
        margin_mean, margin_std = mean_std(chosen - rejected)
        return {
            "loss": float(bradley_terry_loss(chosen, rejected).mean()),
            "preference_accuracy": preference_accuracy(chosen - rejected),
            "reward_margin": margin_mean,
            "reward_margin_std": margin_std,
            "reward_chosen": float(chosen.mean()),
            "reward_rejected": float(rejected.mean()),
        }


def _head_in_model_dtype(model: Any) -> None:
    """TRL casts every trainable weight of a quantized model to bfloat16 (QLoRA's adapters, which cast their input);
    the score head meets the decoder's hidden states without a cast, so it keeps the dtype of the model's embeddings."""
    from oneml.methods.targets import output_head_name

    scorer = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = scorer.get_submodule(output_head_name(scorer))
    head.to(scorer.get_input_embeddings().weight.dtype)


def score_model(model: Any) -> Any:
    """``model`` (a causal LM) as its architecture's sequence-classification model with one output, sharing its
    decoder; a model that already is one is returned as it is (a reward run starting from another)."""
    from transformers import AutoModelForSequenceClassification

    from oneml.methods import peft_task_type

    if peft_task_type(model) == "SEQ_CLS":
        return model
    config = copy.deepcopy(model.config)
    config.num_labels = 1
    try:
        with torch.device("meta"):  # the decoder is the loaded one; only the new head needs memory
            scorer = AutoModelForSequenceClassification.from_config(config)
    except ValueError as err:
        raise OnemlError(
            f"objective.name: reward needs a sequence-classification class for {config.model_type}, and transformers "
            f"has none ({' '.join(str(err).split())[:120]})"
        ) from None
    body = scorer.base_model_prefix
    setattr(scorer, body, getattr(model, body))
    param = next(model.parameters())
    std = getattr(config.get_text_config(), "initializer_range", 0.02)
    for name, module in scorer.named_children():
        if name == body:
            continue
        module.to_empty(device=param.device)
        with torch.no_grad():  # as transformers initialises a new linear head
            for pname, tensor in module.named_parameters():
                if pname.endswith("weight"):
                    tensor.normal_(0.0, std)
                else:
                    tensor.zero_()
        module.to(param.dtype)
    scorer.config.pad_token_id = model.config.pad_token_id
    return scorer


@torch.no_grad()
def sequence_scores(model: Any, items: list[dict], side: str, pad_id: int, batch_size: int) -> torch.Tensor:
    """The model's scalar reward of prompt + one side of each pair (N,)."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        width = max(len(it[side]) for it in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, it in enumerate(chunk):
            ids[r, : len(it[side])] = torch.tensor(it[side])
            mask[r, : len(it[side])] = 1
        # Right padding: transformers reads the score at the last non-pad token (the pad id the trainer set).
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (b, 1)
        out.append(logits[:, 0].double().cpu())
    return torch.cat(out)


def tokenize_scored(dataset: Any, tokenizer: Any) -> list[dict[str, list[int]]]:
    """Per pair: prompt + chosen and prompt + rejected ids as TRL's RewardTrainer makes them (the tokenizer's own
    special tokens, and its end-of-sequence token appended to a text that does not end with it)."""
    eos = tokenizer.eos_token or ""
    items = []
    for row in dataset:
        texts = {side: row["prompt"] + row[side] for side in ("chosen", "rejected")}
        items.append({side: tokenizer(t if t.endswith(eos) else t + eos)["input_ids"] for side, t in texts.items()})
    return items


class RewardEvaluator:
    def __init__(self, trainer, dataset, tokenizer, objective: RewardObjective):
        self.trainer, self.objective = trainer, objective
        self.items = tokenize_scored(dataset, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.batch_size = trainer.args.per_device_eval_batch_size

    def prepare(self) -> None:
        return None

    def __call__(self, prefix: str = "eval") -> dict[str, float]:
        start = time.perf_counter()
        model = self.trainer.model
        was_training = model.training
        model.eval()
        seq = {s: sequence_scores(model, self.items, s, self.pad_id, self.batch_size) for s in ("chosen", "rejected")}
        model.train(was_training)
        metrics = self.objective.scores(seq)
        metrics["seconds"] = time.perf_counter() - start
        metrics["pairs"] = float(len(self.items))
        return {f"{prefix}_{k}": v for k, v in metrics.items()}


OBJECTIVES.register("reward", RewardObjective, "Reward model: a score head on the base, trained on preference pairs")
