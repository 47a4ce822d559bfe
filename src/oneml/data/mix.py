"""Where a run's examples come from: one dataset (``data.dataset``) or a weighted mix of several (``data.datasets``).

Each source is read, its format resolved (its own ``format``, else data.format, else the catalogue's, else
detected from its first row) and converted to the examples the objective needs: conversations (sft),
preference pairs (dpo, orpo, cpo, simpo, reward) or unpaired examples (kto, grouped by row). A source whose rows
cannot serve that objective is refused in one line that says what it has and what is needed.

A mix takes each source's usable examples in a seeded order (``data.split_seed``; ``max_samples`` cuts it) and
draws from them in proportion to the weights, without repeating an example:

    share_i = weight_i / sum(weights)
    size    = min_i(usable_i / share_i)          # the source that runs out first sets the size of the mix
    used_i  = round(share_i * size)

so weights 1 and 1 over 999 and 300 usable rows give 300 + 300. The mixed examples then go through the same
split as one dataset's (`oneml.data.prepare.split_rows`), and the statistics record each source's rows, usable
examples and examples used (``data.stats.sources``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oneml.data.formats import FORMATS, Converted, detect_format, to_conversations, to_pairs, to_unpaired
from oneml.data.sources import DATASETS, Row, load_source_rows
from oneml.errors import OnemlError

if TYPE_CHECKING:
    from oneml.config import DataConfig

CONVERTERS: dict[str, Callable[[list[Row], str, str], Converted]] = {
    "sft": to_conversations,
    "preference": to_pairs,
    "unpaired": to_unpaired,
}
"""Objective's data kind -> the conversion of rows into its examples."""


@dataclass(frozen=True)
class Source:
    dataset: str
    format: str = "auto"
    split: str | None = None
    weight: float = 1.0
    max_samples: int | None = None


@dataclass
class Loaded:
    """The examples of a run's data, before the split, and what the statistics record about them."""

    items: list[Any] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def sources(cfg: DataConfig) -> list[Source]:
    """data.datasets, each entry's unset format/split taken from data.format/data.split; else data.dataset alone."""
    if cfg.datasets is None:
        return [Source(cfg.dataset, cfg.format, cfg.split)]
    return [
        Source(e.dataset, e.format or cfg.format, e.split or cfg.split, e.weight, e.max_samples) for e in cfg.datasets
    ]


def resolve_format(dataset: str, fmt: str, rows: list[Row]) -> str:
    """``fmt``, else the catalogue's format, else detected from the first row."""
    if fmt != "auto":
        FORMATS.get(fmt)  # an unknown name fails here with a did-you-mean
        return fmt
    if dataset in DATASETS:
        return DATASETS.get(dataset).format
    return detect_format(rows[0], dataset)


def read_source(source: Source) -> tuple[list[Row], str]:
    """(rows, format) of one source; an empty dataset is an error."""
    rows = load_source_rows(source.dataset, source.split)
    if not rows:
        raise OnemlError(f"data.dataset: {source.dataset} has no rows")
    return rows, resolve_format(source.dataset, source.format, rows)


def load_items(cfg: DataConfig, kind: str, objective: str | None = None) -> Loaded:
    """The examples of kind ``kind`` ("sft", "preference", "unpaired") for an objective (named in refusals)."""
    parts = []
    for source in sources(cfg):
        rows, fmt = read_source(source)
        refuse_unfit(fmt, kind, source.dataset, objective)
        converted = CONVERTERS[kind](rows, fmt, source.dataset)
        _usable_or_fail(converted, source.dataset, len(rows))
        parts.append((source, fmt, len(rows), converted))
    stats: dict[str, Any] = {
        "dataset": cfg.dataset,
        "format": "+".join(dict.fromkeys(fmt for _, fmt, _, _ in parts)),
        "rows": sum(n for _, _, n, _ in parts),
        "skipped_empty": sum(c.skipped_empty for *_, c in parts),
    }
    if kind == "preference":
        stats["skipped_identical"] = sum(c.skipped_identical for *_, c in parts)
    if cfg.datasets is None:
        return Loaded(parts[0][3].items, stats)
    items, used = mix([(s, c.items) for s, _, _, c in parts], cfg.split_seed)
    stats["sources"] = [
        {"dataset": s.dataset, "format": fmt, "weight": s.weight, "rows": n, "usable": len(c.items), "used": k}
        for (s, fmt, n, c), k in zip(parts, used, strict=True)
    ]
    return Loaded(items, stats)


def mix(parts: list[tuple[Source, list[Any]]], seed: int) -> tuple[list[Any], list[int]]:
    """(mixed examples, examples used per source): proportional to the weights, none repeated (module docstring)."""
    pools = []
    for index, (source, items) in enumerate(parts):
        order = list(range(len(items)))
        random.Random(f"{seed}:{index}").shuffle(order)  # str seeds hash the same in every process
        pools.append([items[i] for i in order[: source.max_samples]])
    total = sum(source.weight for source, _ in parts)
    shares = [source.weight / total for source, _ in parts]
    size = min(len(pool) / share for pool, share in zip(pools, shares, strict=True))
    used = [min(len(pool), round(share * size)) for pool, share in zip(pools, shares, strict=True)]
    return [item for pool, k in zip(pools, used, strict=True) for item in pool[:k]], used


def _usable_or_fail(converted: Converted, dataset: str, rows: int) -> None:
    if not converted.items:
        raise OnemlError(
            f"data.dataset: none of the {rows} rows of {dataset} is usable "
            f"({converted.skipped_empty} empty, {converted.skipped_identical} with chosen == rejected)"
        )


def refuse_unfit(fmt: str, kind: str, dataset: str, objective: str | None) -> None:
    """One line when rows of format ``fmt`` cannot serve an objective needing ``kind``: what they are, what is
    needed, what to use instead."""
    spec = FORMATS.get(fmt)
    unpaired_only = spec.to_unpaired is not None and spec.to_pair is None
    if kind == "sft" and spec.to_conversation is None:
        raise OnemlError(
            f"data.dataset: {objective or 'sft'} needs conversations that end in an answer; {dataset} has unpaired "
            "KTO rows (label), which need an objective for unpaired data (objective: kto)"
        )
    if kind == "preference" and spec.to_pair is None:
        if unpaired_only:
            raise OnemlError(
                f"data.dataset: {objective or 'this objective'} needs paired rows (chosen/rejected); {dataset} has "
                "unpaired KTO rows (label); use an objective for unpaired data (objective: kto), or a file with "
                "chosen/rejected"
            )
        pref = [e.name for e in DATASETS.entries() if FORMATS.get(e.value.format).to_pair is not None]
        raise OnemlError(
            f"data.dataset: {dataset!r} has no preference pairs (chosen/rejected); use a preference "
            f"dataset ({', '.join(pref)}, or a file with chosen/rejected fields) or the sft objective"
        )
    if kind == "unpaired" and spec.to_unpaired is None:
        raise OnemlError(
            f"data.dataset: {objective or 'this objective'} needs answers labelled desirable or not (label), or "
            f"preference pairs (chosen/rejected); {dataset} ({fmt}) has neither"
        )
