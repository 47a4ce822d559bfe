"""Several datasets in one run (data.datasets): shares follow the weights without repeating a row, the draw is
fixed by split_seed, each source keeps its own format, the mix is recorded, and configs without it keep their
run ids."""

from __future__ import annotations

import json
import re

import pytest

from oneml.config import DataConfig, load_run_config, resolve
from oneml.data import prepare_preference, prepare_sft
from oneml.data.mix import Source, mix
from oneml.errors import OnemlError
from oneml.models.tokenizer import byte_tokenizer
from runidkit import id_before

SETTINGS = {"eval_size": 10, "max_length": 4096}


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def _mix(shared_data, **extra) -> DataConfig:
    """alpaca-demo (weight 2) with the shared GSM8K file written as alpaca rows (weight 1, at most 60 rows)."""
    return DataConfig(
        datasets=[
            {"dataset": str(shared_data / "alpaca_en_demo.json"), "weight": 2},
            {"dataset": "gsm8k", "weight": 1, "max_samples": 60},
        ],
        **SETTINGS,
        **extra,
    )


def test_shares_follow_the_weights_and_the_mix_is_recorded(shared_data, tok):
    data = prepare_sft(_mix(shared_data), tok)
    stats = data.stats
    # gsm8k offers 60 rows at a third of the mix, so the mix holds 180 rows: 120 from alpaca (of 999), 60 from gsm8k.
    assert [(s["weight"], s["rows"], s["usable"], s["used"]) for s in stats["sources"]] == [
        (2.0, 999, 999, 120),
        (1.0, 1319, 1319, 60),
    ]
    assert stats["train_rows"] + stats["eval_rows"] == 180 and stats["rows"] == 999 + 1319
    assert stats["dataset"] == f"{shared_data / 'alpaca_en_demo.json'}*2+gsm8k*1" and stats["format"] == "alpaca"
    texts = [tok.decode(ids) for ids in [*data.train["input_ids"], *data.eval["input_ids"]]]
    assert sum(bool(re.search(r"\n#### -?[\d,.]+<\|im_end\|>", t)) for t in texts) == 60  # GSM8K's final answers


def test_the_draw_depends_on_split_seed_only(shared_data, tok):
    first, again = prepare_sft(_mix(shared_data), tok), prepare_sft(_mix(shared_data), tok)
    assert list(first.train["input_ids"]) == list(again.train["input_ids"])
    other = prepare_sft(_mix(shared_data, split_seed=7), tok)
    assert set(map(tuple, other.train["input_ids"])) != set(map(tuple, first.train["input_ids"]))


def test_each_source_keeps_its_format(shared_data, tok):
    cfg = DataConfig(
        datasets=[{"dataset": "alpaca-demo", "max_samples": 20}, {"dataset": "dpo-demo", "max_samples": 20}], **SETTINGS
    )
    sft = prepare_sft(cfg, tok)  # the preference rows teach their chosen answers
    assert sft.stats["format"] == "alpaca+preference" and sft.stats["train_rows"] + sft.stats["eval_rows"] == 40
    with pytest.raises(OnemlError, match=r"^data.dataset: 'alpaca-demo' has no preference pairs"):
        prepare_preference(cfg, tok)  # a pair objective refuses the source that has none, by name


def test_mixing_without_repeats():
    parts = [(Source("a", weight=1), list(range(100))), (Source("b", weight=3), list(range(30)))]
    items, used = mix(parts, seed=0)
    assert used == [10, 30] and len(items) == 40 and len(set(items[:10])) == 10  # b runs out first: 30 = 3/4 of 40


def test_dataset_and_datasets_together_are_one_line(tmp_path):
    with pytest.raises(OnemlError) as err:
        resolve({"data": {"dataset": "alpaca-demo", "datasets": [{"dataset": "gsm8k"}]}})
    assert str(err.value) == (
        "data.datasets: give data.dataset or data.datasets, not both (data.dataset is 'alpaca-demo')"
    )
    with pytest.raises(OnemlError, match="data.datasets: must list at least one dataset"):
        resolve({"data": {"datasets": []}})
    with pytest.raises(OnemlError, match=r"data.datasets.0.weight: must be a positive number, got 0"):
        resolve({"data": {"datasets": [{"dataset": "gsm8k", "weight": 0}]}})


def test_a_mixed_config_round_trips_and_keeps_its_run_id():
    cfg = load_run_config(None, ["data.datasets=[{dataset: alpaca-demo, weight: 2}, {dataset: gsm8k}]"])
    assert cfg.data.dataset == "alpaca-demo*2+gsm8k*1"  # the label tags and tables show
    again = resolve(json.loads(json.dumps(cfg.to_dict())))  # as a saved config.yaml is read back
    assert again == cfg and again.run_id == cfg.run_id
    other = load_run_config(None, ["data.datasets=[{dataset: alpaca-demo, weight: 1}, {dataset: gsm8k}]"])
    assert other.run_id != cfg.run_id


def test_configs_without_the_new_keys_keep_their_run_ids():
    """datasets and max_completion_length are not hashed while unset, so every run recorded before keeps its id."""
    cfg = load_run_config(None, ["method.r=4", "data.eval_size=8"])
    assert cfg.run_id == id_before(cfg)
    longer = load_run_config(None, ["method.r=4", "data.eval_size=8", "data.max_completion_length=100"])
    assert longer.run_id != cfg.run_id
