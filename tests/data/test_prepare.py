"""Preparation end to end: split properties (train/eval/test), statistics, system prompts, preference rendering."""

from __future__ import annotations

import json
import random

import pytest

from oneml.config import DataConfig
from oneml.data import IGNORE_INDEX, prepare_preference, prepare_sft, split_rows, train_eval_split
from oneml.errors import OnemlError
from oneml.models.tokenizer import byte_tokenizer

STATS_KEYS = {
    "dataset", "format", "rows", "train_rows", "eval_rows", "test_rows", "skipped_empty", "truncated",
    "dropped_no_labels", "mean_tokens", "max_tokens", "response_token_share",
}  # fmt: skip


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def _rows(ds) -> set[tuple[int, ...]]:
    return {tuple(ids) for ids in list(ds["input_ids"])}


def test_alpaca_demo_full(tok):
    data = prepare_sft(DataConfig(dataset="alpaca-demo", max_length=2048), tok)
    stats = data.stats
    assert set(stats) == STATS_KEYS
    assert stats["rows"] == 999 and stats["format"] == "alpaca"
    assert stats["eval_rows"] == 100 and stats["train_rows"] == 899  # round(0.1 * 999)
    assert stats["test_rows"] == 0 and data.test is None  # no test split unless asked for
    assert data.train.column_names == ["input_ids", "labels"]
    assert 0 < stats["response_token_share"] < 1 and stats["max_tokens"] <= 2048
    example = data.train[0]
    assert len(example["input_ids"]) == len(example["labels"])


def test_split_is_deterministic_and_disjoint(tok):
    cfg = DataConfig(dataset="alpaca-demo", max_samples=60, eval_size=10, max_length=2048)
    first, again = prepare_sft(cfg, tok), prepare_sft(cfg, tok)
    assert list(first.train["input_ids"]) == list(again.train["input_ids"])
    assert list(first.eval["input_ids"]) == list(again.eval["input_ids"])
    assert len(first.eval) == 10 and len(first.train) == 50
    assert not _rows(first.train) & _rows(first.eval)
    other = prepare_sft(cfg.model_copy(update={"split_seed": 7}), tok)
    assert _rows(other.eval) != _rows(first.eval)


def test_split_function():
    items = list(range(100))
    cfg = DataConfig(eval_fraction=0.2, split_seed=3)
    train, eval_ = train_eval_split(items, cfg)
    assert len(eval_) == 20 and sorted(train + eval_) == items
    assert train_eval_split(items, cfg) == (train, eval_)
    assert train_eval_split(items, DataConfig(eval_size=5, max_samples=30))[1].__len__() == 5
    assert len(train_eval_split(items, DataConfig(max_samples=30))[0]) == 27
    assert len(train_eval_split(list(range(3)), DataConfig(eval_fraction=0.01))[1]) == 1  # at least one eval row


def test_eval_size_leaving_no_train_rows():
    with pytest.raises(OnemlError, match="data.eval_size: holding out data.eval_size=5 of 5 usable row"):
        train_eval_split(list(range(5)), DataConfig(eval_size=5))


# --- the test split ------------------------------------------------------------------------------------------------


def test_three_way_split_is_disjoint_sized_and_takes_the_test_rows_first():
    items = list(range(100))
    cfg = DataConfig(max_samples=60, test_size=10, eval_size=5, split_seed=3)
    train, eval_, test = split_rows(items, cfg)
    assert (len(train), len(eval_), len(test)) == (45, 5, 10)
    assert not set(train) & set(eval_) and not set(train) & set(test) and not set(eval_) & set(test)
    # The same 60 rows as without a test split; the test rows are the first of the seeded order, then eval.
    plain_train, plain_eval = train_eval_split(items, DataConfig(max_samples=60, eval_size=15, split_seed=3))
    assert sorted(train + eval_ + test) == sorted(plain_train + plain_eval)
    assert plain_eval == test + eval_ and plain_train == train
    assert train_eval_split(items, cfg) == (train, eval_)  # the test rows are in neither


def test_without_a_test_split_train_and_eval_rows_are_unchanged():
    items = list(range(100))
    cfg = DataConfig(eval_size=7, split_seed=5)
    order = list(range(100))
    random.Random(5).shuffle(order)  # the split as it was before the test split existed
    assert split_rows(items, cfg) == (order[7:], order[:7], [])


def test_test_fraction_and_size():
    items = list(range(50))
    assert len(split_rows(items, DataConfig(test_fraction=0.2, eval_size=5))[2]) == 10
    assert len(split_rows(items, DataConfig(test_fraction=0.001, eval_size=5))[2]) == 1  # at least one row
    assert len(split_rows(items, DataConfig(test_fraction=0.2, test_size=3, eval_size=5))[2]) == 3  # size wins
    train, eval_, test = split_rows(items, DataConfig(test_fraction=0.2, eval_fraction=0.1))
    assert (len(train), len(eval_), len(test)) == (35, 5, 10)  # both shares of the same 50 rows


def test_test_rows_depend_on_the_split_seed_only():
    items = list(range(200))
    cfg = DataConfig(test_size=20, eval_size=10)
    random.seed(1)
    first = split_rows(items, cfg)
    random.seed(2)  # the global generator (which the run seed drives) plays no part
    assert split_rows(items, cfg) == first
    other = split_rows(items, cfg.model_copy(update={"split_seed": 7}))
    assert set(other[2]) != set(first[2]) and set(other[1]) != set(first[1])


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"test_size": 40}, r"^data.test_size: holding out data.test_size=40 and 3 eval row\(s\) of 30 usable row"),
        ({"test_size": 27}, r"^data.test_size: holding out data.test_size=27 and 3 eval row\(s\) of 30 usable row"),
        ({"test_fraction": 0.9}, r"^data.test_fraction: holding out data.test_fraction=0.9 \(27 test row\(s\)\)"),
        ({"test_size": 20, "eval_size": 10}, r"^data.test_size: .* 10 eval row\(s\) of 30 .* leaves none for training"),
    ],
)
def test_test_split_leaving_no_train_rows_names_its_field(settings, message):
    with pytest.raises(OnemlError, match=message) as err:
        split_rows(list(range(30)), DataConfig(**settings))
    assert "\n" not in str(err.value) and "data.test_size / data.test_fraction" in str(err.value)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"test_size": 0}, "data.test_size: must be a positive integer, got 0"),
        ({"test_fraction": 0.0}, "data.test_fraction: must be a positive number, got 0.0"),
        ({"test_fraction": 1.0}, "data.test_fraction: Input should be less than 1"),
        ({"test_size": "ten"}, "data.test_size: Input should be a valid integer"),
    ],
)
def test_bad_test_split_values_are_refused_at_load(settings, message):
    from oneml.config import resolve

    with pytest.raises(OnemlError, match=message):
        resolve({"data": settings})


def test_sft_test_split(tok):
    cfg = DataConfig(dataset="alpaca-demo", max_samples=60, eval_size=8, test_size=12, max_length=2048)
    data = prepare_sft(cfg, tok)
    assert (len(data.train), len(data.eval), len(data.test)) == (40, 8, 12)
    assert (data.stats["train_rows"], data.stats["eval_rows"], data.stats["test_rows"]) == (40, 8, 12)
    assert data.test.column_names == ["input_ids", "labels"]
    assert not _rows(data.test) & (_rows(data.train) | _rows(data.eval))
    assert _rows(prepare_sft(cfg, tok).test) == _rows(data.test)


def test_preference_test_split(tok):
    cfg = DataConfig(dataset="dpo-demo", max_samples=40, eval_size=4, test_size=6, max_length=100_000)
    data = prepare_preference(cfg, tok)
    assert (len(data.train), len(data.eval), len(data.test)) == (30, 4, 6)
    assert data.stats["test_rows"] == 6 and data.test.column_names == ["prompt", "chosen", "rejected"]
    prompts = {name: set(getattr(data, name)["prompt"]) for name in ("train", "eval", "test")}
    assert not prompts["test"] & (prompts["train"] | prompts["eval"])


def _write(tmp_path, rows, name="rows.json"):
    path = tmp_path / name
    path.write_text(json.dumps(rows))
    return str(path)


def test_empty_dataset(tmp_path, tok):
    with pytest.raises(OnemlError, match="has no rows"):
        prepare_sft(DataConfig(dataset=_write(tmp_path, [])), tok)


def test_all_empty_responses(tmp_path, tok):
    path = _write(tmp_path, [{"instruction": "q", "output": ""}] * 3)
    with pytest.raises(OnemlError, match="none of the 3 rows .* is usable \\(3 empty"):
        prepare_sft(DataConfig(dataset=path), tok)


def test_counts_skips_truncations_and_drops(tmp_path, tok):
    rows = [{"instruction": f"question {i}", "output": f"answer {i}"} for i in range(20)]
    rows += [{"instruction": "q", "output": ""}]  # skipped: empty answer
    rows += [{"instruction": "long " * 40, "output": "a"} for _ in range(5)]  # answer beyond max_length
    rows += [{"instruction": "q", "output": "long answer " * 10} for _ in range(5)]  # truncated, kept
    data = prepare_sft(DataConfig(dataset=_write(tmp_path, rows), max_length=64, eval_size=2), tok)
    stats = data.stats
    assert stats["rows"] == 31 and stats["skipped_empty"] == 1
    assert stats["dropped_no_labels"] == 5
    assert stats["truncated"] == 5  # kept but cut; the dropped ones count as dropped only
    assert stats["train_rows"] + stats["eval_rows"] == 25 and stats["max_tokens"] == 64


def test_system_prompt_only_when_missing(tmp_path, tok):
    user, answer = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}
    rows = [{"messages": [user, answer]}, {"messages": [{"role": "system", "content": "Own."}, user, answer]}] * 2
    data = prepare_sft(DataConfig(dataset=_write(tmp_path, rows), system_prompt="Be kind.", eval_size=1), tok)
    texts = [tok.decode(ids) for ids in [*data.train["input_ids"], *data.eval["input_ids"]]]
    assert sum(t.startswith("<|im_start|>system\nBe kind.<|im_end|>") for t in texts) == 2
    assert sum(t.startswith("<|im_start|>system\nOwn.<|im_end|>") for t in texts) == 2


def test_loss_on_all(tok):
    data = prepare_sft(DataConfig(dataset="gsm8k", max_samples=20, loss_on="all"), tok)
    assert data.stats["response_token_share"] == 1.0
    assert all(IGNORE_INDEX not in labels for labels in list(data.train["labels"]))


def test_sft_on_a_preference_dataset(tok):
    data = prepare_sft(DataConfig(dataset="dpo-demo", max_samples=30, max_length=4096), tok)
    assert data.stats["format"] == "preference" and data.stats["train_rows"] == 27


def test_chat_template_needed(tok):
    bare = byte_tokenizer()
    bare.chat_template = None
    with pytest.raises(OnemlError, match="has no chat template"):
        prepare_sft(DataConfig(max_samples=10), bare)
    assert prepare_sft(DataConfig(max_samples=10, chat_template="chatml"), bare).stats["train_rows"] == 9


def test_preference_strings(tok):
    data = prepare_preference(DataConfig(dataset="dpo-demo", max_samples=40, eval_size=4, max_length=100_000), tok)
    assert data.train.column_names == ["prompt", "chosen", "rejected"]
    assert (len(data.train), len(data.eval)) == (36, 4)
    row = data.train[0]
    assert row["prompt"].startswith("<|im_start|>") and row["prompt"].endswith("<|im_start|>assistant\n")
    assert row["chosen"].endswith("<|im_end|>") and row["rejected"].endswith("<|im_end|>")
    assert "<|im_start|>" not in row["chosen"]


def test_pairs_longer_than_max_length_are_cut_kept_and_counted(tok):
    # With one token per byte many dpo-demo prompts exceed 512 tokens: cut, not skipped (more in test_judged.py).
    data = prepare_preference(DataConfig(dataset="dpo-demo", max_samples=40, eval_size=4, max_length=512), tok)
    assert data.stats["truncated_pairs"] > 0 and "skipped_too_long" not in data.stats
    assert len(data.train) + len(data.eval) == 40
    for row in data.train:
        assert len(tok(row["prompt"] + row["chosen"])["input_ids"]) <= 512


def test_preference_skips_are_counted(tmp_path, tok):
    rows = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(6)]
    rows += [{"prompt": "p", "chosen": "", "rejected": "bad"}, {"prompt": "p", "chosen": "same", "rejected": "same"}]
    data = prepare_preference(DataConfig(dataset=_write(tmp_path, rows), eval_size=1, system_prompt="S."), tok)
    assert data.stats["skipped_empty"] == 1 and data.stats["skipped_identical"] == 1
    assert data.stats["train_rows"] == 5 and data.stats["eval_rows"] == 1
    assert data.train[0]["prompt"].startswith("<|im_start|>system\nS.<|im_end|>\n<|im_start|>user\np")


def test_preference_objective_on_alpaca(tok):
    with pytest.raises(OnemlError, match=r"^data.dataset: 'alpaca-demo' has no preference pairs \(chosen/rejected\); "):
        prepare_preference(DataConfig(dataset="alpaca-demo"), tok)
