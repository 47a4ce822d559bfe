"""Data: the dataset catalogue, row formats, chat templates with response-only labels, preparation.

    from oneml.data import prepare_sft
    data = prepare_sft(cfg.data, tokenizer)   # data.train / data.eval (/ data.test): input_ids + labels; data.stats

Importing this package is cheap: `datasets` and transformers are imported inside the functions
that need them.
"""

from __future__ import annotations

from oneml.data.formats import FORMATS, Format, PreferencePair, detect_format, to_conversations, to_pairs
from oneml.data.prepare import PreparedData, prepare_preference, prepare_sft, split_rows, train_eval_split
from oneml.data.sources import (
    DATASETS,
    FILE_READERS,
    DatasetSource,
    HubSource,
    PackageIndexSource,
    load_rows,
    read_file,
)
from oneml.data.templates import IGNORE_INDEX, NAMED_TEMPLATES, resolve_chat_template, tokenize_conversation

__all__ = [
    "DATASETS",
    "FILE_READERS",
    "FORMATS",
    "IGNORE_INDEX",
    "NAMED_TEMPLATES",
    "DatasetSource",
    "Format",
    "HubSource",
    "PackageIndexSource",
    "PreferencePair",
    "PreparedData",
    "detect_format",
    "load_rows",
    "prepare_preference",
    "prepare_sft",
    "read_file",
    "resolve_chat_template",
    "split_rows",
    "to_conversations",
    "to_pairs",
    "tokenize_conversation",
    "train_eval_split",
]
