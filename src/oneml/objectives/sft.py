"""Supervised fine-tuning: next-token cross-entropy on the response tokens.

    L = - (1 / |R|) * sum_{t in R} log p(x_t | x_<t)

where R is the set of positions whose label is not -100 (the assistant's tokens by default; the
data layer builds the labels). TRL's SFTTrainer computes it, with token accuracy and token counts,
over padding-free packed batches (`oneml.data.packing`) and through our chunked LM head
(`oneml.models.lm_head`) by default; both leave L unchanged (tests/perf).
"""

from __future__ import annotations

from typing import Literal

from oneml.objectives import OBJECTIVES, ObjectiveConfig, TrainerInputs


class SFTObjective(ObjectiveConfig):
    name: Literal["sft"] = "sft"
    packs = True
    gathers_eval = True

    def prepare(self, data_cfg, tokenizer):
        from oneml.data import prepare_sft

        return prepare_sft(data_cfg, tokenizer)

    def build_trainer(self, inputs: TrainerInputs):
        from trl import SFTConfig, SFTTrainer

        speed, args, tokenizer = inputs.speed, inputs.args, inputs.tokenizer
        collator = None
        if speed.packing:
            from oneml.data.packing import PackedCollator, takes_varlen

            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            collator = PackedCollator(pad, varlen=takes_varlen(inputs.model))
            # Packed rows carry no attention mask, so transformers cannot tell their pad tails from real tokens;
            # train/hooks.py counts the examples' tokens instead.
            args = {**args, "include_num_input_tokens_seen": "all"}
        sft_args = SFTConfig(
            **args,
            max_length=None,  # the data layer already truncated
            dataset_kwargs={"skip_prepare_dataset": True},
            remove_unused_columns=False,
        )
        trainer = SFTTrainer(
            model=inputs.model,
            args=sft_args,
            train_dataset=inputs.train_dataset,
            eval_dataset=inputs.eval_dataset,
            processing_class=tokenizer,
            callbacks=inputs.callbacks,
            optimizers=inputs.optimizers,
            data_collator=collator,
        )
        if speed.chunked_loss:
            from oneml.models.head_backends import training_log_probs
            from oneml.models.lm_head import install_chunked_head

            install_chunked_head(trainer.model, log_probs=training_log_probs(speed.lm_head))
        return trainer

    def evaluator(self, trainer, data, tokenizer, max_length):
        return _TokenEvaluator(trainer)


class _TokenEvaluator:
    def __init__(self, trainer):
        self.trainer = trainer

    def prepare(self) -> None:
        return None

    def __call__(self, prefix: str = "eval") -> dict[str, float]:
        from oneml.objectives.token_eval import evaluate_tokens

        return evaluate_tokens(self.trainer, prefix)


OBJECTIVES.register("sft", SFTObjective, "Supervised fine-tuning: cross-entropy on response tokens")
