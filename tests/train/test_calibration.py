"""Calibration batches for data-driven inits come from the run's training rows only, and a run initialised by
EVA or CorDA trains, records its diagnostics and reloads through the real `train()`."""

from __future__ import annotations

import json

import pytest
import torch

from oneml import load_run_config, train
from oneml.models import load_model_and_tokenizer
from oneml.train.calibration import calibration_batches

SPLIT = ["data.max_samples=30", "data.eval_size=5", "data.test_size=5", "train.batch_size=3", "data.max_length=96"]


def prepared(overrides: list[str]):
    cfg = load_run_config(None, ["model.name=tiny-llama", *overrides])
    _, tokenizer = load_model_and_tokenizer(cfg.model)
    return cfg, tokenizer, cfg.objective.prepare(cfg.data, tokenizer)


def rows_of(batches: list[dict[str, torch.Tensor]]) -> list[tuple[int, ...]]:
    pairs = [(ids, mask) for b in batches for ids, mask in zip(b["input_ids"], b["attention_mask"], strict=True)]
    return [tuple(ids[mask.bool()].tolist()) for ids, mask in pairs]


def test_sft_calibration_is_the_first_training_rows_never_eval_or_test_rows():
    cfg, tokenizer, data = prepared(["data.dataset=alpaca-demo", *SPLIT])
    batches = calibration_batches(data.train, tokenizer, cfg, "cpu", 2)
    assert [len(b["input_ids"]) for b in batches] == [3, 3]  # train.batch_size rows each
    assert rows_of(batches) == [tuple(r["input_ids"]) for r in data.train.select(range(6))]
    held_out = {tuple(r["input_ids"]) for split in (data.eval, data.test) for r in split}
    assert not held_out & set(rows_of(batches))
    for batch, rows in zip(batches, (data.train.select(range(3)), data.train.select(range(3, 6))), strict=True):
        for labels, mask, row in zip(batch["labels"], batch["attention_mask"], rows, strict=True):
            assert labels[mask.bool()].tolist() == row["labels"]  # the response mask travels with the rows
            assert (labels[~mask.bool()] == -100).all()  # padding is never a label


def test_preference_calibration_reads_prompt_and_chosen_answer_with_the_prompt_masked():
    cfg, tokenizer, data = prepared(["data.dataset=dpo-demo", "objective.name=dpo", *SPLIT])
    batches = calibration_batches(data.train, tokenizer, cfg, "cpu", 1)
    for i, row in enumerate(data.train.select(range(3))):
        prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        answer = tokenizer(row["chosen"], add_special_tokens=False)["input_ids"]
        ids = (prompt + answer)[-cfg.data.max_length :]
        kept = max(0, len(ids) - len(answer))
        n = int(batches[0]["attention_mask"][i].sum())
        assert batches[0]["input_ids"][i, :n].tolist() == ids
        assert batches[0]["labels"][i, :n].tolist() == [-100] * kept + ids[kept:]


@pytest.mark.parametrize(
    ("init", "objective"),
    [
        ("eva", "sft"),
        pytest.param("corda", "sft", marks=pytest.mark.slow),
        pytest.param("eva", "dpo", marks=pytest.mark.slow),  # calibration from preference rows
    ],
)
def test_a_data_initialised_run_trains_logs_kappa_and_reloads(init, objective, tmp_path):
    dataset = {"sft": "alpaca-demo", "dpo": "dpo-demo"}[objective]
    cfg = load_run_config(
        None,
        [
            "model.name=tiny-llama",
            f"objective.name={objective}",
            f"data.dataset={dataset}",
            *SPLIT,
            f"method.init={init}",
            "method.r=4",
            "method.calibration_batches=2",
            "method.dropout=0",
            "train.max_steps=2",
            "train.diagnostics_every=1",
            "train.learning_rate=0.01",
            f"tracking.root={tmp_path}",
        ],
    )
    result = train(cfg, progress=False)
    kappa = json.loads((result.run_dir / "diagnostics" / "kappa.json").read_text())
    if init == "eva":  # the redistributed ranks are recorded (rho 2: between 0 and 2 r, r on average at most)
        ranks = json.loads((result.run_dir / "diagnostics" / "eva_ranks.json").read_text())
        assert set(ranks) == set(kappa["layers"]) and all(0 < r <= 8 for r in ranks.values())
    assert kappa["steps"] == [1, 2] and kappa["layers"]
    assert all(values[-1] is not None and values[-1] >= 1 for values in kappa["kappa"]), kappa  # B A != 0 by now
    ids = torch.randint(0, 255, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = result.model.eval()(ids).logits
        base, _ = load_model_and_tokenizer(cfg.model, seed=cfg.train.seed)
        reloaded = cfg.method.load(base, result.run_dir / "model").eval()
        torch.testing.assert_close(reloaded(ids).logits, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cfg.method.merge(reloaded)(ids).logits, expected, atol=1e-4, rtol=1e-4)
