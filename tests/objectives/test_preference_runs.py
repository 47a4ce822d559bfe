"""DPO and ORPO runs on a tiny model: preference accuracy on the training pairs rises; references,
the SFT -> DPO pipeline, the MLflow record, and bad preference data."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from oneml import OnemlError, load_run_config, train
from oneml.data import prepare_preference
from oneml.models import load_model_and_tokenizer
from oneml.objectives.preference import PreferenceEvaluator
from oneml.tracking import list_runs


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """Short pairs a tiny model can learn within a few dozen steps: always prefer the polite answer."""
    path = tmp_path_factory.mktemp("pref") / "pairs.jsonl"
    topics = ["tea", "rain", "maps", "cats", "jazz", "bread", "trains", "snow", "ink", "moss", "salt", "wind"]
    rows = [
        {"prompt": f"Tell me about {t}.", "chosen": f"Gladly! {t} is nice.", "rejected": "No. Go away."} for t in topics
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def pref_config(root, data, *extra):
    return load_run_config(
        None,
        [
            "model.name=tiny-llama",
            "method.r=8",
            "method.target_modules=all-linear",
            f"data.dataset={data}",
            "data.eval_size=2",
            "data.max_length=128",
            "train.max_steps=30",
            "train.batch_size=4",
            "train.learning_rate=0.01",
            "train.warmup_ratio=0",
            "train.logging_steps=5",
            f"tracking.root={root}",
            *extra,
        ],
    )


def train_pair_accuracy(cfg, model, reference) -> float:
    """Preference accuracy of ``model`` on the run's *training* pairs, with ``reference`` as DPO's reference."""
    _, tokenizer = load_model_and_tokenizer(cfg.model)
    data = prepare_preference(cfg.data, tokenizer)
    trainer = SimpleNamespace(model=model, ref_model=reference, args=SimpleNamespace(per_device_eval_batch_size=8))
    return PreferenceEvaluator(trainer, data.train, tokenizer, cfg.data.max_length, cfg.objective)("train")[
        "train_preference_accuracy"
    ]


@pytest.mark.parametrize(
    "objective", [["objective.name=dpo", "objective.beta=0.5"], ["objective.name=orpo", "objective.lambda=1.0"]]
)
def test_preference_accuracy_rises_on_training_pairs(tmp_path, pairs_file, objective):
    cfg = pref_config(tmp_path, pairs_file, *objective)
    result = train(cfg, progress=False)
    base, _ = load_model_and_tokenizer(cfg.model, seed=cfg.train.seed)
    before = train_pair_accuracy(cfg, base, base)
    after = train_pair_accuracy(cfg, result.model.eval(), base)
    assert after >= 0.9 and after > before, (before, after)
    m = result.metrics
    assert m["eval_reward_margin"] > m["initial_eval_reward_margin"]
    (run,) = list_runs(result.tracking_uri)
    assert run["status"] == "FINISHED"
    assert {"eval_preference_accuracy", "eval_reward_margin", "peak_rss_mib", "train_seconds"} <= set(run["metrics"])
    assert run["params"]["objective.name"] == cfg.objective.name
    assert m["train_tokens"] > 0 and m["tokens_per_second"] > 0  # ORPO's pairs are counted by its collator
    if cfg.objective.name == "dpo":
        assert m["initial_eval_kl_ref"] == pytest.approx(0.0, abs=1e-6)  # the policy starts at the reference
        assert "eval_kl_ref" in run["metrics"]
    else:
        assert {"eval_log_odds_ratio_mean", "eval_log_odds_ratio_std", "eval_sft_loss"} <= set(run["metrics"])
        assert m["train_tokens"] > 0


@pytest.mark.parametrize("reference", ["copy", "precomputed"])
def test_dpo_reference_modes(tmp_path, pairs_file, reference):
    cfg = pref_config(
        tmp_path, pairs_file, "objective.name=dpo", f"objective.reference={reference}", "train.max_steps=4"
    )
    result = train(cfg, progress=False)
    assert result.metrics["initial_eval_kl_ref"] == pytest.approx(0.0, abs=1e-6)
    assert result.metrics["eval_loss"] < result.metrics["initial_eval_loss"]


def test_dpo_copy_reference_of_a_quantized_method_is_the_quantized_starting_model(tmp_path, pairs_file):
    """QLoRA + reference: copy: the reference is the base as the policy holds it (4-bit), so the policy starts at
    it exactly; a float copy would differ by the quantization error from step 0 (and cost a float model's memory)."""
    from oneml.models.quantization import is_quantized

    cfg = pref_config(
        tmp_path, pairs_file, "method.name=qlora", "objective.name=dpo", "objective.reference=copy",
        "train.max_steps=1",
    )  # fmt: skip
    result = train(cfg, progress=False)
    assert result.metrics["initial_eval_kl_ref"] == pytest.approx(0.0, abs=1e-6)
    model, _ = load_model_and_tokenizer(cfg.model, seed=cfg.train.seed)
    reference = cfg.method.frozen_base(cfg.objective.reference_model(model, cfg.method))
    assert sum(is_quantized(m) for m in reference.modules()) == 7 * reference.config.num_hidden_layers


def test_orpo_batches_carry_their_token_count_from_the_host():
    from oneml.data.packing import REAL_TOKENS
    from oneml.objectives.orpo import CountingCollator

    def collate(examples):
        return {
            "chosen_attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
            "rejected_attention_mask": torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]]),
            "prompt": ["a", "b"],
        }

    batch = CountingCollator(collate)([{}, {}])
    assert batch[REAL_TOKENS] == 10 and isinstance(batch[REAL_TOKENS], int)


def test_host_counts_need_no_device_round_trip_in_one_process():
    """The tokens a batch carries are added as an integer: no device tensor, no gather, no sync per micro-batch;
    batches without a count go to transformers' own counter."""
    from oneml.data.packing import REAL_TOKENS
    from oneml.train.hooks import count_real_tokens

    batches = [{"x": 1, REAL_TOKENS: 7}, {"input_ids": torch.ones(2, 3)}]
    own_counted = []

    def refuse(*args, **kwargs):
        raise AssertionError("a collective in a one-process run")

    trainer = SimpleNamespace(
        get_batch_samples=lambda *a, **k: (batches, None),
        _track_num_input_tokens=own_counted.append,
        args=SimpleNamespace(world_size=1, device=torch.device("cpu")),
        accelerator=SimpleNamespace(gather=refuse),
        state=SimpleNamespace(num_input_tokens_seen=0),
    )
    count_real_tokens(trainer)
    fetched, _ = trainer.get_batch_samples()
    for batch in fetched:
        trainer._track_num_input_tokens(batch)
    assert trainer.state.num_input_tokens_seen == 7 and REAL_TOKENS not in fetched[0]
    assert own_counted == [batches[1]]


def test_dpo_adapter_reference_needs_an_adapter_method(tmp_path, pairs_file):
    cfg = pref_config(tmp_path, pairs_file, "objective.name=dpo", "method=full", "objective.reference=adapter")
    with pytest.raises(OnemlError, match="objective.reference: 'adapter' keeps a frozen copy of the method's adapter"):
        train(cfg, progress=False)
    assert not (tmp_path / "mlflow.db").exists()


def test_sft_then_dpo_starts_from_the_sft_result(tmp_path, pairs_file):
    sft = train(
        load_run_config(
            None,
            [
                "model.name=tiny-llama",
                "data.max_samples=24",
                "data.eval_size=4",
                "data.max_length=96",
                "train.max_steps=3",
                "train.learning_rate=0.01",
                f"tracking.root={tmp_path}",
            ],
        ),
        progress=False,
    )
    cfg = pref_config(tmp_path, pairs_file, "objective.name=dpo", f"model.adapter={sft.run_id}", "train.max_steps=2")
    result = train(cfg, progress=False)
    # The reference is the SFT result: at the start the policy equals it, so the log-ratio is zero ...
    assert result.metrics["initial_eval_kl_ref"] == pytest.approx(0.0, abs=1e-6)
    # ... and the starting model is not the raw base.
    base, _ = load_model_and_tokenizer(cfg.model, seed=cfg.train.seed)
    ids = torch.randint(0, 255, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), result.model.disable_adapter():
        assert not torch.allclose(result.model(ids).logits, base(ids).logits)
    with pytest.raises(OnemlError, match="model.adapter: 'nope' is neither a run id"):
        train(pref_config(tmp_path, pairs_file, "objective.name=dpo", "model.adapter=nope"), progress=False)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"prompt": "a", "chosen": "b"}], "rejected"),
        ([{"prompt": "a", "chosen": "same", "rejected": "same"}] * 3, "chosen == rejected"),
        ([{"prompt": "a", "chosen": "", "rejected": "x"}] * 3, "empty"),
    ],
)
def test_bad_preference_data_is_a_clear_error(tmp_path, rows, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(OnemlError, match=message):
        train(pref_config(tmp_path, path, "objective.name=dpo", "data.format=preference"), progress=False)
    assert not (tmp_path / "mlflow.db").exists()


def test_bad_pairs_are_skipped_and_counted(tmp_path, pairs_file):
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    rows += [{"prompt": "x", "chosen": "same", "rejected": "same"}, {"prompt": "y", "chosen": "", "rejected": "z"}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = pref_config(tmp_path, path, "objective.name=orpo", "train.max_steps=2")
    result = train(cfg, progress=False)
    assert result.data_stats["skipped_identical"] == 1 and result.data_stats["skipped_empty"] == 1


def test_preference_objective_on_sft_data_is_refused(tmp_path):
    with pytest.raises(OnemlError, match="has no preference pairs"):
        train(pref_config(tmp_path, "alpaca-demo", "objective.name=dpo"), progress=False)
