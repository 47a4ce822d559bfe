"""One real SFT + LoRA run on a tiny model, end to end: weights, round trip, MLflow record, failures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from oneml import OnemlError, load_run_config, train
from oneml.models import load_model_and_tokenizer
from oneml.tracking import list_runs, resolve_tracking_uri


def tiny_config(root: Path, *extra: str):
    return load_run_config(
        None,
        [
            "model.name=tiny-llama",
            "method.r=4",
            "method.alpha=8",
            "method.dropout=0.0",
            "data.dataset=alpaca-demo",
            "data.max_samples=64",
            "data.eval_size=8",
            "data.max_length=128",
            "train.max_steps=6",
            "train.batch_size=4",
            "train.learning_rate=0.01",
            "train.warmup_ratio=0",
            "train.logging_steps=1",
            f"tracking.root={root}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(root)
    return cfg, train(cfg, progress=False)


def _base(cfg):
    model, _ = load_model_and_tokenizer(cfg.model, device="cpu", seed=cfg.train.seed)
    return model


def test_eval_loss_drops(run):
    _, result = run
    m = result.metrics
    assert m["eval_loss"] < m["initial_eval_loss"]
    assert m["eval_perplexity"] == pytest.approx(torch.tensor(m["eval_loss"]).exp().item(), rel=1e-6)
    assert 0.0 <= m["eval_token_accuracy"] <= 1.0
    assert m["steps"] == 6


def test_adapter_changes_and_base_does_not(run):
    cfg, result = run
    base = _base(cfg)
    trained = result.model
    lora_b = [p for n, p in trained.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero
    trained_base = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p
        for n, p in trained.named_parameters()
        if "lora_" not in n
    }
    for name, param in base.named_parameters():
        assert torch.equal(param, trained_base[name]), name
    assert all(not p.requires_grad for n, p in trained.named_parameters() if "lora_" not in n)


def test_saved_adapter_round_trips_to_same_logits(run):
    from peft import PeftModel

    cfg, result = run
    reloaded = PeftModel.from_pretrained(_base(cfg), result.run_dir / "model").eval()
    ids = torch.randint(0, 255, (2, 24), generator=torch.Generator().manual_seed(0))
    result.model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, result.model(ids).logits, atol=1e-6)


def test_counts_and_speed_are_recorded(run):
    _, result = run
    m = result.metrics
    assert 0 < m["trainable_params"] < m["total_params"]
    assert m["trainable_percent"] == pytest.approx(100 * m["trainable_params"] / m["total_params"])
    assert m["train_tokens"] > 0 and m["tokens_per_second"] > 0
    assert 0 < m["first_step_seconds"] < m["train_seconds"]  # the warm-up step is timed apart, inside the total
    assert m["peak_rss_mib"] > 50


def test_mlflow_record(run):
    cfg, result = run
    client = MlflowClient(result.tracking_uri)
    record = client.get_run(result.mlflow_run_id)
    assert record.info.status == "FINISHED"
    assert record.data.params["method.r"] == "4"
    assert record.data.params["model.name"] == "tiny-llama"
    assert record.data.tags["oneml.run_id"] == cfg.run_id
    assert record.data.tags["version.torch"].startswith("2.")
    assert record.data.tags["oneml.method.complexity"] == "1"  # LoRAConfig.complexity, read back by the guide
    assert "hardware.cpu" in record.data.tags
    # fp32 weights, no autocast on the CPU; run alone (not one of a study's concurrent trials)
    assert record.data.tags["oneml.switch.precision"] == "fp32"
    assert record.data.tags["oneml.concurrent_trials"] == "1"
    losses = client.get_metric_history(result.mlflow_run_id, "train_loss")
    assert sorted(x.step for x in losses) == [1, 2, 3, 4, 5, 6]
    evals = client.get_metric_history(result.mlflow_run_id, "eval_loss")
    assert {x.step for x in evals} == {0, 6}
    artifacts = {a.path for a in client.list_artifacts(result.mlflow_run_id, "model")}
    assert "model/adapter_model.safetensors" in artifacts
    root = Path(cfg.tracking.root)
    assert Path(
        client.get_experiment(record.info.experiment_id).artifact_location.removeprefix("file://")
    ).is_relative_to(root)


def test_error_before_run_records_nothing(tmp_path):
    cfg = tiny_config(tmp_path, "method.target_modules=[nope]")
    with pytest.raises(OnemlError, match=r"method.target_modules: nope match no linear layer.*q_proj"):
        train(cfg, progress=False)
    assert list_runs(resolve_tracking_uri(None, tmp_path)) == []
    assert not any((tmp_path / "runs").iterdir())


def test_failure_during_run_is_marked_failed(tmp_path, monkeypatch):
    from oneml.objectives.sft import SFTObjective

    def broken(self, inputs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(SFTObjective, "build_trainer", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_config(tmp_path), progress=False)
    (run,) = list_runs(resolve_tracking_uri(None, tmp_path))
    assert run["status"] == "FAILED"
    assert "simulated crash" in run["tags"]["oneml.failure"]
    assert list((tmp_path / "runs").iterdir()) == []  # nothing half-written


def test_early_grad_norm_logging_and_steps_to_threshold(tmp_path):
    cfg = tiny_config(
        tmp_path, "train.max_steps=20", "train.logging_steps=50", "train.loss_threshold=100", "train.eval_before=false"
    )
    result = train(cfg, progress=False)
    client = MlflowClient(result.tracking_uri)
    steps = sorted(m.step for m in client.get_metric_history(result.mlflow_run_id, "grad_norm"))
    assert steps == [1, 10, 20]  # the first step, then every 10 steps within the first 100
    (threshold,) = client.get_metric_history(result.mlflow_run_id, "steps_to_threshold")
    assert threshold.value == 1.0  # any loss is below 100: reached at the first logged step
    (seconds,) = client.get_metric_history(result.mlflow_run_id, "seconds_to_threshold")
    assert seconds.step == 1 and 0 < seconds.value <= result.metrics["train_wall_seconds"]


def test_divergence_fails_the_run_at_its_step(tmp_path):
    from transformers import TrainerCallback

    from oneml.train.monitors import TrainingDiverged

    class Poison(TrainerCallback):
        """Simulates a numerical blow-up: one adapter weight becomes NaN after step 2."""

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:
                with torch.no_grad():
                    next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("nan"))

    cfg = tiny_config(tmp_path, "train.eval_before=false")
    with pytest.raises(TrainingDiverged, match="non-finite gradients at step 3"):
        train(cfg, progress=False, callbacks=[Poison()])
    (run,) = list_runs(resolve_tracking_uri(None, tmp_path))
    assert run["status"] == "FAILED" and "TrainingDiverged" in run["tags"]["oneml.failure"]
    assert "step 3" in run["tags"]["oneml.failure"]
    assert list((tmp_path / "runs").iterdir()) == []
