"""Calibration batches for data-driven adapter inits (EVA, CorDA): the run's own training rows, as model inputs.

A data-driven init reads the activations of a few batches before training starts. They come from the training
split only (selection reads the eval rows and the guide compares the test rows: an init that saw either would leak
them into the result), in the split's order, train.batch_size rows per batch, so the same config reads the same
rows. Any objective's rows work: token rows (SFT) as they are; text rows (preference and KTO data) as prompt +
answer, the chosen answer of a pair, with the prompt masked out of the labels as the objectives' losses do.
"""

from __future__ import annotations

from typing import Any

import torch

from oneml.errors import OnemlError

ANSWER_COLUMNS = ("chosen", "completion")
"""Text columns read after the prompt, the first one a row has (a pair's chosen answer, a KTO completion)."""


def calibration_batches(
    rows: Any, tokenizer: Any, config: Any, device: str, count: int
) -> list[dict[str, torch.Tensor]]:
    """The first ``count`` batches of ``rows`` (a datasets.Dataset of the training split) as padded model inputs
    (input_ids, attention_mask, labels: -100 on padding and on prompt tokens) on ``device`` (cpu, cuda, ...)."""
    size = config.train.batch_size
    taken = rows.select(range(min(len(rows), count * size)))
    examples = [_tokens(row, tokenizer, config.data.max_length) for row in taken]
    if not examples:
        raise OnemlError(f"method.init: {config.method.init} reads training batches, and this run has no training rows")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return [_batch(examples[i : i + size], pad, device) for i in range(0, len(examples), size)]


def _tokens(row: dict[str, Any], tokenizer: Any, max_length: int) -> tuple[list[int], list[int]]:
    if "input_ids" in row:
        ids = list(row["input_ids"])[:max_length]
        labels = list(row.get("labels") or ids)[:max_length]
        return ids, labels
    answer = next((row[c] for c in ANSWER_COLUMNS if isinstance(row.get(c), str)), None)
    if not isinstance(row.get("prompt"), str) or answer is None:
        raise OnemlError(
            f"method.init: cannot read calibration tokens from training rows with columns {', '.join(row)} "
            f"(expected input_ids, or prompt with one of {', '.join(ANSWER_COLUMNS)})"
        )
    prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    full = prompt + tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = full[-max_length:]  # the prompt is cut from the left, as the preference objectives cut it
    kept_prompt = max(0, len(prompt) - (len(full) - len(ids)))
    labels = [-100] * kept_prompt + ids[kept_prompt:]
    return ids, labels


def _batch(examples: list[tuple[list[int], list[int]]], pad: int, device: str) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}
