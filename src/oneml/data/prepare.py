"""From a DataConfig to train/eval(/test) datasets ready for a trainer, with statistics about what was kept.

    load rows -> convert (format) -> seeded shuffle (split_seed) -> max_samples -> hold out test, then eval
              -> tokenize with response labels (SFT) or render prompt/chosen/rejected (preference)

The split depends on ``split_seed`` only, never on the run seed: every run of a study is scored on
the same held-out rows, so their eval losses are comparable. The optional test split is for the
comparison only: whatever selects (halving rungs, tuning) reads the eval rows, so that the rows a
winner is reported on were never used to pick it. Test rows are taken first, so an unset test split
leaves the eval and train rows exactly as they were.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oneml.data.formats import FORMATS, Converted, Message, PreferencePair, detect_format, to_conversations, to_pairs
from oneml.data.sources import DATASETS, load_rows
from oneml.data.templates import IGNORE_INDEX, render, resolve_chat_template, tokenize_conversation
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


def resolve_format(cfg: DataConfig, rows: list[dict[str, Any]]) -> str:
    """cfg.format, else the catalogue's format, else detected from the first row."""
    if cfg.format != "auto":
        FORMATS.get(cfg.format)  # an unknown name fails here with a did-you-mean
        return cfg.format
    if cfg.dataset in DATASETS:
        return DATASETS.get(cfg.dataset).format
    return detect_format(rows[0], cfg.dataset)


def _load(cfg: DataConfig) -> tuple[list[dict[str, Any]], str]:
    rows = load_rows(cfg)
    if not rows:
        raise OnemlError(f"data.dataset: {cfg.dataset} has no rows")
    return rows, resolve_format(cfg, rows)


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


def _converted_or_fail(converted: Converted, cfg: DataConfig, rows: int) -> list[Any]:
    if not converted.items:
        raise OnemlError(
            f"data.dataset: none of the {rows} rows of {cfg.dataset} is usable "
            f"({converted.skipped_empty} empty, {converted.skipped_identical} with chosen == rejected)"
        )
    return converted.items


def with_system_prompt(conversation: list[Message], system_prompt: str | None) -> list[Message]:
    if not system_prompt or any(m["role"] == "system" for m in conversation):
        return conversation
    return [{"role": "system", "content": system_prompt}, *conversation]


def prepare_sft(cfg: DataConfig, tokenizer: Any) -> PreparedData:
    """Train/eval(/test) datasets of input_ids + labels (lists of ints), and statistics."""
    import datasets

    rows, fmt = _load(cfg)
    converted = to_conversations(rows, fmt, cfg.dataset)
    conversations = [with_system_prompt(c, cfg.system_prompt) for c in _converted_or_fail(converted, cfg, len(rows))]
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
        "dataset": cfg.dataset,
        "format": fmt,
        "rows": len(rows),
        **_split_sizes(parts),
        "skipped_empty": converted.skipped_empty,
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
    tokenizer: Any, conversations: list[list[Message]], cfg: DataConfig, template: str, counts: dict[str, int]
) -> list[dict[str, Any]]:
    examples = []
    for conversation in conversations:
        example = tokenize_conversation(tokenizer, conversation, cfg.max_length, cfg.loss_on, chat_template=template)
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


def prepare_preference(cfg: DataConfig, tokenizer: Any) -> PreparedData:
    """Train/eval(/test) datasets of prompt/chosen/rejected strings, for DPO-style trainers.

    prompt = the prompt conversation rendered with the chat template and its generation prompt;
    chosen/rejected = the answer text followed by the template's end-of-turn (e.g. ``<|im_end|>``).
    """
    import datasets

    rows, fmt = _load(cfg)
    if FORMATS.get(fmt).to_pair is None:
        pref = [e.name for e in DATASETS.entries() if FORMATS.get(e.value.format).to_pair is not None]
        raise OnemlError(
            f"data.dataset: {cfg.dataset!r} has no preference pairs (chosen/rejected); use a preference "
            f"dataset ({', '.join(pref)}, or a file with chosen/rejected fields) or the sft objective"
        )
    converted = to_pairs(rows, fmt, cfg.dataset)
    pairs = _converted_or_fail(converted, cfg, len(rows))
    split = split_rows(pairs, cfg)
    template = resolve_chat_template(tokenizer, cfg)
    too_long = 0
    rendered = {}
    for name, part in _named_parts(split):
        rows_ = [_render_pair(tokenizer, p, template, cfg.system_prompt) for p in part]
        rendered[name] = [r for r in rows_ if _fits(tokenizer, r, cfg.max_length)]
        too_long += len(rows_) - len(rendered[name])
        if not rendered[name]:
            raise OnemlError(
                f"data.max_length: every {name} prompt of {cfg.dataset} leaves fewer than {MIN_COMPLETION_TOKENS} "
                f"of the {cfg.max_length} tokens for the answers; raise data.max_length"
            )
    built = {k: datasets.Dataset.from_list(v) for k, v in rendered.items()}
    stats = {
        "dataset": cfg.dataset,
        "format": fmt,
        "rows": len(rows),
        **_split_sizes(rendered),
        "skipped_empty": converted.skipped_empty,
        "skipped_identical": converted.skipped_identical,
        "skipped_too_long": too_long,
    }
    return PreparedData(train=built["train"], eval=built["eval"], stats=stats, test=built.get("test"))


MIN_COMPLETION_TOKENS = 16
"""A pair whose prompt leaves less room than this for the answers is skipped (and counted): trainers would
otherwise score an empty or nearly empty completion, which makes the preference loss meaningless (NaN)."""


def _fits(tokenizer: Any, row: dict[str, str], max_length: int) -> bool:
    prompt_tokens = len(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
    return prompt_tokens + MIN_COMPLETION_TOKENS <= max_length


def _render_pair(tokenizer: Any, pair: PreferencePair, template: str, system_prompt: str | None) -> dict[str, str]:
    prompt_messages = with_system_prompt(pair.prompt, system_prompt)
    prompt = render(tokenizer, prompt_messages, template, add_generation_prompt=True)
    return {
        "prompt": prompt,
        "chosen": _completion(tokenizer, prompt_messages, prompt, pair.chosen, template),
        "rejected": _completion(tokenizer, prompt_messages, prompt, pair.rejected, template),
    }


def _completion(tokenizer: Any, prompt_messages: list[Message], prompt: str, answer: str, template: str) -> str:
    """The answer plus what the template writes after it up to the end-of-turn (layout whitespace dropped)."""
    full = render(tokenizer, [*prompt_messages, {"role": "assistant", "content": answer}], template)
    if not full.startswith(prompt):
        raise OnemlError(
            "data.chat_template: the rendered prompt is not a prefix of the rendered conversation, so the "
            "answer cannot be cut out; set data.chat_template: chatml"
        )
    completion = full[len(prompt) :]
    if completion.startswith(answer):
        return answer + completion[len(answer) :].rstrip()
    return completion.rstrip()
