"""The test split end to end on a tiny model: the final model is scored once on the test rows (test_* metrics next
to eval_*, in MLflow and metrics.json), no evaluation before the end reads them, a paused run reads none, and
preference runs record their test scores too."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient
from test_sft_lora_run import tiny_config

from oneml import load_run_config, train
from oneml.analysis.metrics import METRICS, metric, test_key
from oneml.data import prepare_sft
from oneml.models import load_model_and_tokenizer
from splitkit import Timeline, label_tokens, spy_on_test_rows

SPLIT = ["data.test_size=12", "train.save_steps=2", "train.eval_steps=2", "train.save_adapter=false"]


@pytest.fixture(scope="module")
def paused_then_finished(tmp_path_factory):
    """The same run paused at step 2 (as at a halving rung), then continued to its 6 steps: one timeline each."""
    monkeypatch = pytest.MonkeyPatch()
    paused_line, final_line = Timeline(), Timeline()
    cfg = tiny_config(tmp_path_factory.mktemp("runs"), *SPLIT)
    try:
        spy_on_test_rows(monkeypatch, paused_line)
        paused = train(cfg, progress=False, stop_at=2, callbacks=[paused_line])
        monkeypatch.undo()
        spy_on_test_rows(monkeypatch, final_line)
        final = train(cfg, progress=False, callbacks=[final_line])
    finally:
        monkeypatch.undo()
    return cfg, (paused, paused_line), (final, final_line)


def test_a_paused_run_reads_no_test_row_and_records_no_test_metric(paused_then_finished):
    _, (paused, timeline), _ = paused_then_finished
    assert not paused.complete and ("step", 2) in timeline.events
    assert timeline.reads() == []
    assert not any(k.startswith("test_") for k in paused.metrics) and "eval_loss" in paused.metrics


def test_test_rows_are_read_once_after_training_ends(paused_then_finished):
    cfg, _, (final, timeline) = paused_then_finished
    assert final.complete and final.metrics["steps"] == 6
    end = timeline.events.index(("train_end", 6))
    assert timeline.reads(timeline.events[:end]) == []  # the periodic evaluations at steps 4 read eval rows only
    kept = final.data_stats["test_rows"]  # of the 12 held out, those with a response token within max_length
    assert sorted(timeline.reads()) == list(range(kept)) and kept > 6  # the final evaluation: every test row, once


def test_test_metrics_are_scored_on_the_test_rows(paused_then_finished):
    cfg, _, (final, _) = paused_then_finished
    m = final.metrics
    _, tokenizer = load_model_and_tokenizer(cfg.model, device="cpu")
    data = prepare_sft(cfg.data, tokenizer)
    assert m["test_tokens"] == label_tokens(data.test) and m["eval_tokens"] == label_tokens(data.eval)
    assert m["test_tokens"] != m["eval_tokens"] and m["test_loss"] != m["eval_loss"]
    assert m["test_perplexity"] == pytest.approx(math.exp(m["test_loss"]), rel=1e-6)
    assert 0.0 <= m["test_token_accuracy"] <= 1.0
    assert (final.data_stats["test_rows"], final.data_stats["eval_rows"]) == (len(data.test), len(data.eval))


def test_test_metrics_tag_and_sizes_are_recorded(paused_then_finished):
    cfg, _, (final, _) = paused_then_finished
    client = MlflowClient(final.tracking_uri)
    record = client.get_run(final.mlflow_run_id)
    assert record.info.status == "FINISHED" and record.data.tags["oneml.test_split"] == "true"
    assert record.data.params["data.test_size"] == "12"
    assert record.data.params["data.stats.test_rows"] == str(final.data_stats["test_rows"])
    (test_loss,) = client.get_metric_history(final.mlflow_run_id, "test_loss")  # once, at the end
    assert test_loss.step == 6 and test_loss.value == final.metrics["test_loss"]
    assert {x.step for x in client.get_metric_history(final.mlflow_run_id, "eval_loss")} == {0, 2, 4, 6}
    saved = json.loads((final.run_dir / "metrics.json").read_text())
    assert saved["test_loss"] == final.metrics["test_loss"] and "test_token_accuracy" in saved


def test_a_run_without_a_test_split_says_so(tmp_path):
    cfg = tiny_config(tmp_path, "train.max_steps=1", "train.eval_before=false", "train.save_adapter=false")
    result = train(cfg, progress=False)
    assert not any(k.startswith("test_") for k in result.metrics) and result.data_stats["test_rows"] == 0
    tags = MlflowClient(result.tracking_uri).get_run(result.mlflow_run_id).data.tags
    assert tags["oneml.test_split"] == "false"


def test_the_registry_knows_every_test_twin_of_a_quality_metric():
    for key in (
        "eval_loss",
        "eval_perplexity",
        "eval_token_accuracy",
        "eval_preference_accuracy",
        "eval_reward_margin",
    ):
        twin = test_key(key)
        assert twin == "test_" + key.removeprefix("eval_") and twin in METRICS
        assert metric(twin).higher_is_better == metric(key).higher_is_better and not metric(twin).cost
    assert metric("test_loss").label == "test loss" and metric("test_perplexity").label == "test perplexity"
    assert test_key("train_loss") is None and test_key("initial_eval_loss") is None


def test_dpo_records_its_preference_scores_on_the_test_rows(tmp_path):
    from oneml.data import prepare_preference
    from oneml.objectives.preference import PreferenceEvaluator

    topics = ["tea", "rain", "maps", "cats", "jazz", "bread", "trains", "snow", "ink", "moss", "salt", "wind"]
    rows = [{"prompt": f"About {t}?", "chosen": f"Gladly! {t} is nice.", "rejected": "No. Go away."} for t in topics]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    settings = ["model.name=tiny-llama", "method.r=4", "objective.name=dpo", f"data.dataset={pairs}"]
    settings += ["data.eval_size=2", "data.test_size=3", "data.max_length=128", "train.max_steps=3"]
    settings += ["train.batch_size=4", "train.learning_rate=0.01", "train.save_adapter=false"]
    cfg = load_run_config(None, [*settings, "train.save_steps=1", f"tracking.root={tmp_path / 'root'}"])
    paused_line, final_line = Timeline(), Timeline()
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy_on_test_rows(monkeypatch, paused_line)
        assert not train(cfg, progress=False, stop_at=1).complete
    assert paused_line.reads() == []  # a paused run does not even score the reference on the test pairs
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy_on_test_rows(monkeypatch, final_line)
        result = train(cfg, progress=False)
    assert final_line.reads()  # the reference (the starting model) and, at the end, the trained policy
    m = result.metrics
    assert m["test_pairs"] == 3 and m["eval_pairs"] == 2
    for key in ("preference_accuracy", "reward_margin", "kl_ref", "loss"):
        assert f"test_{key}" in m and f"eval_{key}" in m

    # The same numbers from the trained policy and the starting model, scored on the test pairs directly.
    base, tokenizer = load_model_and_tokenizer(cfg.model, device="cpu", seed=cfg.train.seed)
    test_pairs = prepare_preference(cfg.data, tokenizer).test
    trainer = SimpleNamespace(
        model=result.model.eval(), ref_model=base, args=SimpleNamespace(per_device_eval_batch_size=4)
    )
    direct = PreferenceEvaluator(trainer, test_pairs, tokenizer, cfg.data.max_length, cfg.objective)("test")
    assert direct["test_reward_margin"] == pytest.approx(m["test_reward_margin"], rel=1e-4, abs=1e-6)
    assert direct["test_preference_accuracy"] == m["test_preference_accuracy"]
