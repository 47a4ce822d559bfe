"""What DPO and ORPO share: preference data, and an evaluation that scores both the same way.

The evaluation tokenizes each held-out pair itself and sums the completion's token log-probs under
the policy (and, for DPO, the reference), then applies the objective's own formula from
`losses.py`. Computing it ourselves, rather than reading each trainer's logs, is what makes a DPO
run and an ORPO run comparable: same pairs, same truncation, same definitions.

The reference log-probs are computed once, before training, from the reference the trainer uses
(`reference.reference_of`: its frozen copy of the model or of the adapter): the starting model.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch

from oneml.objectives import ObjectiveConfig
from oneml.objectives.reference import reference_of


class PreferenceObjective(ObjectiveConfig):
    data_kind = "preference"  # type: ignore[assignment]
    eval_metrics = ("eval_loss", "eval_preference_accuracy", "eval_reward_margin")  # type: ignore[assignment]

    def prepare(self, data_cfg, tokenizer):
        from oneml.data import prepare_preference

        return prepare_preference(data_cfg, tokenizer)

    def scores(self, seq: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics from per-pair sequence statistics (see `PreferenceEvaluator.statistics`)."""
        raise NotImplementedError

    needs_reference: ClassVar[bool] = False
    """True when evaluation scores the policy against a reference (computed once, before training)."""

    def evaluator(self, trainer, data, tokenizer, max_length):
        return PreferenceEvaluator(trainer, data.eval, tokenizer, max_length, self)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_pairs(dataset, tokenizer, max_length: int) -> list[dict[str, list[int]]]:
    """Per pair: prompt+chosen and prompt+rejected ids with the completion start, truncated at the end
    (TRL's default keep_start), dropping pairs left without a completion token."""
    out = []
    for row in dataset:
        prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        item = {}
        for side in ("chosen", "rejected"):
            ids = tokenizer(row["prompt"] + row[side], add_special_tokens=False)["input_ids"]
            start = _common_prefix(prompt, ids)
            item[side], item[f"{side}_start"] = ids[:max_length], start
        if min(len(item["chosen"]) - item["chosen_start"], len(item["rejected"]) - item["rejected_start"]) > 0:
            out.append(item)
    return out


def _ensure_fused_head(model) -> None:
    from peft import PeftModel
    from trl.trainer.utils import add_fused_lm_head

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    # TRL wraps forward with functools.wraps, so only the unwrapped signature shows its new keyword
    if "fused_lm_head" not in inspect.signature(base.forward, follow_wrapped=False).parameters:
        add_fused_lm_head(base, outputs=("log_probs",))


@torch.no_grad()
def sequence_logps(model, items: list[dict], side: str, pad_id: int, batch_size: int) -> tuple[torch.Tensor, ...]:
    """(sum of completion token log-probs (N,), completion lengths (N,)) for one side of each pair."""
    _ensure_fused_head(model)
    device = next(model.parameters()).device
    sums, counts = [], []
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        width = max(len(it[side]) for it in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, it in enumerate(chunk):
            seq, start = it[side], it[f"{side}_start"]
            ids[r, : len(seq)] = torch.tensor(seq)
            mask[r, : len(seq)] = 1
            labels[r, start : len(seq)] = torch.tensor(seq[start:])
        out = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device), fused_lm_head=True
        )
        sums.append(out.log_probs.double().sum(-1).cpu())  # (b,)
        counts.append(out.label_mask.sum(-1).cpu())  # (b,)
    return torch.cat(sums), torch.cat(counts).double()


class PreferenceEvaluator:
    def __init__(self, trainer, dataset, tokenizer, max_length: int, objective: PreferenceObjective):
        self.trainer, self.objective = trainer, objective
        self.items = tokenize_pairs(dataset, tokenizer, max_length)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.batch_size = trainer.args.per_device_eval_batch_size
        self.ref: dict[str, torch.Tensor] | None = None

    def _side_stats(self, model, prefix: str) -> dict[str, torch.Tensor]:
        stats = {}
        for side in ("chosen", "rejected"):
            stats[f"{prefix}{side}"], stats[f"{side}_len"] = sequence_logps(
                model, self.items, side, self.pad_id, self.batch_size
            )
        return stats

    def prepare(self) -> None:
        """Score the reference once, before any training step."""
        if self.objective.needs_reference and self.ref is None:
            with reference_of(self.trainer) as ref_model:
                was_training = ref_model.training
                ref_model.eval()
                self.ref = self._side_stats(ref_model, "ref_")
                ref_model.train(was_training)

    def statistics(self) -> dict[str, torch.Tensor]:
        model = self.trainer.model
        was_training = model.training
        model.eval()
        stats = self._side_stats(model, "policy_")
        model.train(was_training)
        return stats | (self.ref or {})

    def __call__(self, prefix: str = "eval") -> dict[str, float]:
        import time

        start = time.perf_counter()
        self.prepare()
        metrics = self.objective.scores(self.statistics())
        metrics["seconds"] = time.perf_counter() - start
        metrics["pairs"] = float(len(self.items))
        return {f"{prefix}_{k}": v for k, v in metrics.items()}


def shared_scores(seq: dict[str, torch.Tensor]) -> dict[str, float]:
    """Reference-free numbers every preference run reports, so DPO and ORPO compare on common ground."""
    chosen_mean = seq["policy_chosen"] / seq["chosen_len"]
    rejected_mean = seq["policy_rejected"] / seq["rejected_len"]
    return {
        "logp_accuracy": float((chosen_mean > rejected_mean).double().mean()),
        "chosen_logp": float(chosen_mean.mean()),
        "rejected_logp": float(rejected_mean.mean()),
        "chosen_nll": float(-chosen_mean.mean()),
    }


def preference_accuracy(margin: torch.Tensor) -> float:
    """Share of pairs where the chosen completion wins, a tie counting half: before training a policy equal to
    its reference gives every pair a reward margin of exactly 0, and "0% accurate" would misread a coin toss."""
    return float(((margin > 0).double() + 0.5 * (margin == 0).double()).mean())


def mean_std(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.std(unbiased=True)) if x.numel() > 1 else 0.0


def trainer_common_args(args: dict[str, Any], max_length: int) -> dict[str, Any]:
    """Trainer settings both preference trainers share."""
    return {**args, "max_length": max_length, "remove_unused_columns": False}
