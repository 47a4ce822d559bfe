"""A spy on the test split: every read of a test row is logged, next to the training steps, so that a test can
prove when the rows were read (only by the final evaluation) and by which train() call."""

from __future__ import annotations

from dataclasses import replace

import torch
from transformers import TrainerCallback


class Timeline(TrainerCallback):
    """The order of events of the runs it watches: ("step", n), ("train_end", n), ("test_row", i), ("call", ...)."""

    def __init__(self):
        self.events: list[tuple] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.events.append(("step", state.global_step))

    def on_train_end(self, args, state, control, **kwargs):
        self.events.append(("train_end", state.global_step))

    def reads(self, events: list[tuple] | None = None) -> list[int]:
        return [e[1] for e in (self.events if events is None else events) if e[0] == "test_row"]


class CountingRows(torch.utils.data.Dataset):
    """The test rows, logging every row a data loader (or anything else) takes from them."""

    def __init__(self, rows, timeline: Timeline):
        self.rows, self.timeline = rows, timeline

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        self.timeline.events.append(("test_row", index))
        return self.rows[index]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def spy_on_test_rows(monkeypatch, timeline: Timeline) -> None:
    """Data preparation (SFT and preference) hands out the test rows wrapped in CountingRows."""
    import oneml.data

    def spied(real):
        def prepare(cfg, tokenizer):
            data = real(cfg, tokenizer)
            return data if data.test is None else replace(data, test=CountingRows(data.test, timeline))

        return prepare

    for name in ("prepare_sft", "prepare_preference"):
        monkeypatch.setattr(oneml.data, name, spied(getattr(oneml.data, name)))


def label_tokens(rows) -> int:
    """Label tokens the token evaluation scores in ``rows`` (each label is predicted from the token before it)."""
    return sum(sum(label != -100 for label in row["labels"][1:]) for row in rows)
