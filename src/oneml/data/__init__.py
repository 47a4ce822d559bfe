"""Data: the dataset catalogue, row formats, chat templates with response-only labels, preparation.

    from oneml.data import prepare_sft
    data = prepare_sft(cfg.data, tokenizer)   # data.train / data.eval (/ data.test): input_ids + labels; data.stats

prepare_preference gives prompt/chosen/rejected strings (DPO, ORPO), prepare_unpaired prompt/completion/label
(KTO); data.datasets mixes several datasets by weight (`oneml.data.mix`).

Importing this package is cheap: `datasets` and transformers are imported inside the functions
that need them.
"""

from __future__ import annotations

from oneml.data.formats import (
    FORMATS,
    Conversation,
    Format,
    PreferencePair,
    UnpairedExample,
    detect_format,
    to_conversations,
    to_pairs,
    to_unpaired,
)
from oneml.data.mix import load_items
from oneml.data.prepare import (
    PreparedData,
    prepare_preference,
    prepare_sft,
    prepare_unpaired,
    split_rows,
    train_eval_split,
)
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
    "Conversation",
    "DatasetSource",
    "Format",
    "HubSource",
    "PackageIndexSource",
    "PreferencePair",
    "PreparedData",
    "UnpairedExample",
    "detect_format",
    "load_items",
    "load_rows",
    "prepare_preference",
    "prepare_sft",
    "prepare_unpaired",
    "read_file",
    "resolve_chat_template",
    "split_rows",
    "to_conversations",
    "to_pairs",
    "to_unpaired",
    "tokenize_conversation",
    "train_eval_split",
]
