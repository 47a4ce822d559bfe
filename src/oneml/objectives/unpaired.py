"""The held-out evaluation of objectives on unpaired answers (KTO): each answer scored on its own, and the pairs
among them scored as pairs, so a KTO run and a DPO run on the same preference data compare on the same pairs.

Per held-out example i (prompt x_i, answer y_i, desirable or not): the summed completion log-prob under the policy
and the reference, and the same for a mismatched answer, x_i with y_{i-2} (the KL term's estimate, as TRL builds it
from a neighbour's answer; two back, because the answers of a held-out pair sit side by side). A pair is a
desirable answer followed by an undesirable one to the same prompt (`prepare_unpaired` keeps them so); preference
pairs unpaired for KTO give one per pair, KTO files where they were written that way. The reference is scored once,
before training (`reference.reference_of`).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from oneml.objectives.preference import sequence_logps
from oneml.objectives.reference import reference_of

MISMATCH_SHIFT = 2
"""x_i is scored with y_{i-2}: two back, past the other answer of its own pair."""


def tokenize_unpaired(dataset: Any, tokenizer: Any, max_length: int) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    """(items with "completion" and "mismatch" sequences, labels (N,) bool, pairs (P, 2) of indices into items).

    Sequences are cut at max_length keeping their start, as TRL's trainers cut; an example left without an answer
    token is dropped."""
    rows, prompts = [], []
    for row in dataset:
        prompt, full = _ids(tokenizer, row["prompt"]), _ids(tokenizer, row["prompt"] + row["completion"])
        if len(full[:max_length]) > _common_prefix(prompt, full):
            rows.append(row)
            prompts.append(prompt)
    shift = MISMATCH_SHIFT if len(rows) > MISMATCH_SHIFT else 1
    items = []
    for i, (row, prompt) in enumerate(zip(rows, prompts, strict=True)):
        item: dict[str, Any] = {}
        other = rows[i - shift]["completion"]  # a negative index wraps around: the first ones take the last answers
        for side, answer in (("completion", row["completion"]), ("mismatch", other)):
            ids = _ids(tokenizer, row["prompt"] + answer)
            item[side], item[f"{side}_start"] = ids[:max_length], _common_prefix(prompt, ids)
        items.append(item)
    labels = torch.tensor([bool(r["label"]) for r in rows], dtype=torch.bool)
    pairs = [
        (i, i + 1)
        for i in range(len(rows) - 1)
        if rows[i]["label"] and not rows[i + 1]["label"] and rows[i]["prompt"] == rows[i + 1]["prompt"]
    ]
    return items, labels, torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class UnpairedEvaluator:
    def __init__(self, trainer: Any, dataset: Any, tokenizer: Any, max_length: int, objective: Any):
        self.trainer, self.objective = trainer, objective
        self.items, self.labels, self.pairs = tokenize_unpaired(dataset, tokenizer, max_length)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.batch_size = trainer.args.per_device_eval_batch_size
        self.ref: dict[str, torch.Tensor] | None = None

    def _stats(self, model: Any, prefix: str) -> dict[str, torch.Tensor]:
        was_training = model.training
        model.eval()
        stats = {}
        for side in ("completion", "mismatch"):
            stats[f"{prefix}{side}"], stats[f"{side}_len"] = sequence_logps(
                model, self.items, side, self.pad_id, self.batch_size
            )
        model.train(was_training)
        return stats

    def prepare(self) -> None:
        """Score the reference once, before any training step."""
        if self.ref is None:
            with reference_of(self.trainer) as ref_model:
                self.ref = self._stats(ref_model, "ref_")

    def __call__(self, prefix: str = "eval") -> dict[str, float]:
        start = time.perf_counter()
        self.prepare()
        seq = self._stats(self.trainer.model, "policy_") | (self.ref or {})
        metrics = self.objective.scores(seq | {"desirable": self.labels, "pairs": self.pairs})
        metrics["seconds"] = time.perf_counter() - start
        metrics["examples"], metrics["pairs"] = float(len(self.items)), float(len(self.pairs))
        return {f"{prefix}_{k}": v for k, v in metrics.items()}
