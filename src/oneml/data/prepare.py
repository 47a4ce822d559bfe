"""From a DataConfig to train/eval(/test) datasets ready for a trainer, with statistics about what was kept.

    load rows -> convert (format) [-> mix several datasets by weight] -> seeded shuffle (split_seed) -> max_samples
              -> hold out test, then eval
              -> tokenize with response labels (SFT), or render prompt/chosen/rejected (preference) or
                 prompt/completion/label (unpaired, KTO), cut to max_length the way TRL cuts them

The split depends on ``split_seed`` only, never on the run seed: every run of a study is scored on
the same held-out rows, so their eval losses are comparable. The optional test split is for the
comparison only: whatever selects (halving rungs, tuning) reads the eval rows, so that the rows a
winner is reported on were never used to pick it. Test rows are taken first, so an unset test split
leaves the eval and train rows exactly as they were.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from oneml.data.formats import Conversation
from oneml.data.messages import with_system_prompt
from oneml.data.mix import load_items, read_source, sources
from oneml.data.pairs import Budget, fit_all, render_pair, render_unpaired
from oneml.data.templates import IGNORE_INDEX, resolve_chat_template, tokenize_conversation
from oneml.errors import OnemlError

if TYPE_CHECKING:
    import datasets

    from oneml.config import DataConfig


@dataclass
class PreparedData:
    train: datasets.Dataset
    eval: datasets.Dataset
    stats: dict[str, Any] = field(default_factory=dict)
    test: datasets.Dataset | None = None
    """The test split (data.test_size / data.test_fraction), None without one."""


def _load(cfg: DataConfig) -> tuple[list[dict[str, Any]], str]:
    """(rows, format) of data.dataset, for readers of raw rows (`oneml.eval`); a mix has no single format."""
    if cfg.datasets is not None:
        raise OnemlError(
            "data.datasets: this step reads the rows of one dataset, and this run mixes several; "
            "use oneml.data.mix.load_items for the mixed examples"
        )
    return read_source(sources(cfg)[0])


def split_rows(items: list[Any], cfg: DataConfig) -> tuple[list[Any], list[Any], list[Any]]:
    """(train, eval, test), disjoint: shuffled with cfg.split_seed, cut to cfg.max_samples, then the test rows
    taken first (none without a test split), the eval rows next and the rest for training."""
    order = list(range(len(items)))
    random.Random(cfg.split_seed).shuffle(order)
    if cfg.max_samples is not None:
        order = order[: cfg.max_samples]
    n = len(order)
    n_test = _test_rows(cfg, n)
    n_eval = cfg.eval_size if cfg.eval_size is not None else max(1, round(cfg.eval_fraction * n))
    _check_sizes(cfg, n, n_test, n_eval)
    test, eval_, train = order[:n_test], order[n_test : n_test + n_eval], order[n_test + n_eval :]
    return [items[i] for i in train], [items[i] for i in eval_], [items[i] for i in test]


def train_eval_split(items: list[Any], cfg: DataConfig) -> tuple[list[Any], list[Any]]:
    """(train, eval) of `split_rows`: the test rows, if any, are in neither."""
    train, eval_, _ = split_rows(items, cfg)
    return train, eval_


def _test_rows(cfg: DataConfig, n: int) -> int:
    if cfg.test_size is not None:
        return cfg.test_size
    return max(1, round(cfg.test_fraction * n)) if cfg.test_fraction is not None else 0


def _check_sizes(cfg: DataConfig, n: int, n_test: int, n_eval: int) -> None:
    """At least one training row must be left; the error names the split that took them."""
    if n_test + n_eval < n:
        return
    if n_test == 0:
        asked = f"data.eval_size={cfg.eval_size}" if cfg.eval_size is not None else f"{n_eval} eval row(s)"
        raise OnemlError(
            f"data.eval_size: holding out {asked} of {n} usable row(s) of {cfg.dataset} leaves none for "
            "training; lower data.eval_size / data.eval_fraction or use more rows"
        )
    key = "test_size" if cfg.test_size is not None else "test_fraction"
    asked = f"data.{key}={getattr(cfg, key)}" + ("" if key == "test_size" else f" ({n_test} test row(s))")
    raise OnemlError(
        f"data.{key}: holding out {asked} and {n_eval} eval row(s) of {n} usable row(s) of {cfg.dataset} leaves "
        "none for training; lower data.test_size / data.test_fraction / data.eval_size or use more rows"
    )


def _with_system(conversation: Conversation, system_prompt: str | None) -> Conversation:
    return Conversation(with_system_prompt(conversation.messages, system_prompt), conversation.tools)


def prepare_sft(cfg: DataConfig, tokenizer: Any) -> PreparedData:
    """Train/eval(/test) datasets of input_ids + labels (lists of ints), and statistics."""
    import datasets

    loaded = load_items(cfg, "sft")
    conversations = [_with_system(c, cfg.system_prompt) for c in loaded.items]
    split = split_rows(conversations, cfg)
    template = resolve_chat_template(tokenizer, cfg)
    counts = {"truncated": 0, "dropped_no_labels": 0}
    parts = {}
    for name, convs in _named_parts(split):
        examples = _tokenize_all(tokenizer, convs, cfg, template, counts)
        if not examples:
            raise OnemlError(
                f"data.max_length: no {name} example of {cfg.dataset} keeps a response token within "
                f"{cfg.max_length} tokens; raise data.max_length"
            )
        parts[name] = examples
    stats = {
        **loaded.stats,
        **_split_sizes(parts),
        **counts,
        **_token_stats([e for examples in parts.values() for e in examples]),
    }
    built = {
        k: datasets.Dataset.from_dict({"input_ids": [e["input_ids"] for e in v], "labels": [e["labels"] for e in v]})
        for k, v in parts.items()
    }
    return PreparedData(train=built["train"], eval=built["eval"], stats=stats, test=built.get("test"))


def _named_parts(split: tuple[list[Any], list[Any], list[Any]]) -> list[tuple[str, list[Any]]]:
    """("train", ...), ("eval", ...) and ("test", ...) when there is a test split."""
    train, eval_, test = split
    return [("train", train), ("eval", eval_)] + ([("test", test)] if test else [])


def _split_sizes(parts: dict[str, list[Any]]) -> dict[str, int]:
    """Rows kept per split; test_rows is 0 without a test split, so every run records the same statistics."""
    return {f"{name}_rows": len(parts.get(name, ())) for name in ("train", "eval", "test")}


def _tokenize_all(
    tokenizer: Any, conversations: list[Conversation], cfg: DataConfig, template: str, counts: dict[str, int]
) -> list[dict[str, Any]]:
    examples = []
    for conv in conversations:
        example = tokenize_conversation(
            tokenizer, conv.messages, cfg.max_length, cfg.loss_on, chat_template=template, tools=conv.tools
        )
        if example is None:
            counts["dropped_no_labels"] += 1
            continue
        counts["truncated"] += example["truncated"]
        examples.append(example)
    return examples


def _token_stats(examples: list[dict[str, Any]]) -> dict[str, Any]:
    lengths = [len(e["input_ids"]) for e in examples]
    labelled = sum(sum(label != IGNORE_INDEX for label in e["labels"]) for e in examples)
    return {
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
        "max_tokens": max(lengths),
        "response_token_share": round(labelled / sum(lengths), 4),
    }


def completion_budget(cfg: DataConfig) -> Budget:
    """data.max_length and what an answer keeps when the prompt is long (data.max_completion_length, default half)."""
    return Budget(cfg.max_length, cfg.max_completion_length or cfg.max_length // 2)


def prepare_preference(cfg: DataConfig, tokenizer: Any, objective: str | None = None) -> PreparedData:
    """Train/eval(/test) datasets of prompt/chosen/rejected strings, for DPO-style trainers (`oneml.data.pairs`).

    A pair longer than data.max_length is cut (prompt from the left, answers to the completion budget), kept and
    counted (``truncated_pairs``); ``objective`` names the objective in refusals of data it cannot use.
    """
    loaded = load_items(cfg, "preference", objective)
    template = resolve_chat_template(tokenizer, cfg)
    render = partial(render_pair, tokenizer, template=template, system_prompt=cfg.system_prompt)
    built, cut = _render_and_fit(tokenizer, split_rows(loaded.items, cfg), render, ("chosen", "rejected"), cfg)
    stats = {**loaded.stats, **_split_sizes(built), "truncated_pairs": cut}
    return PreparedData(train=built["train"], eval=built["eval"], stats=stats, test=built.get("test"))


def prepare_unpaired(cfg: DataConfig, tokenizer: Any, objective: str | None = None) -> PreparedData:
    """Train/eval(/test) datasets of prompt/completion/label (TRL's KTO data: label True = desirable answer).

    From KTO rows (`label`) or from preference pairs (each pair gives a desirable and an undesirable example);
    cut to data.max_length like pairs and counted (``truncated``), plus ``desirable`` / ``undesirable`` counts
    of the training split (KTO weighs the two by their shares). The split is by row, so both answers of a pair
    land in the same split, and max_samples / eval_size / test_size count rows (pairs) as they do for DPO. The
    held-out answers of a pair stay side by side (chosen first), which the evaluation reads as a pair; the training
    examples are shuffled (split_seed), since TRL estimates KTO's KL term from each example's neighbour's answer.
    """
    loaded = load_items(cfg, "unpaired", objective)
    template = resolve_chat_template(tokenizer, cfg)
    render = partial(render_unpaired, tokenizer, template=template, system_prompt=cfg.system_prompt)
    train, eval_, test = split_rows(loaded.items, cfg)
    train = [example for row in train for example in row]
    random.Random(f"{cfg.split_seed}:unpaired").shuffle(train)  # str seeds hash the same in every process
    split = (train, [e for row in eval_ for e in row], [e for row in test for e in row])
    built, cut = _render_and_fit(tokenizer, split, render, ("completion",), cfg)
    desirable = sum(built["train"]["label"])
    stats = {**loaded.stats, **_split_sizes(built), "truncated": cut, "desirable": desirable}
    stats["undesirable"] = len(built["train"]) - desirable
    return PreparedData(train=built["train"], eval=built["eval"], stats=stats, test=built.get("test"))


def _render_and_fit(
    tokenizer: Any, split: tuple[list[Any], ...], render: Callable[[Any], dict], sides: tuple[str, ...], cfg: DataConfig
) -> tuple[dict[str, datasets.Dataset], int]:
    """({split name: datasets.Dataset of the rendered, fitted rows}, how many rows were cut)."""
    import datasets

    budget = completion_budget(cfg)
    built, cut = {}, 0
    for name, part in _named_parts(split):
        rows, n = fit_all(tokenizer, [render(item) for item in part], sides, budget)
        built[name], cut = datasets.Dataset.from_list(rows), cut + n
    return built, cut
