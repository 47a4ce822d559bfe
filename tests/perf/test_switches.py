"""The speed switches: on by default where exact, off with a recorded reason where not, and in the run's tags."""

from __future__ import annotations

import pytest

from oneml import load_run_config, train
from oneml.methods import MethodContext
from oneml.models import load_model_and_tokenizer
from oneml.tracking import list_runs, resolve_tracking_uri


def config(root, *extra):
    return load_run_config(
        None,
        [
            "model.name=tiny-llama",
            "data.max_samples=24",
            "data.eval_size=4",
            "data.max_length=96",
            "train.max_steps=2",
            "train.batch_size=4",
            "train.eval_before=false",
            "train.save_adapter=false",
            f"tracking.root={root}",
            *extra,
        ],
    )


def speed_of(cfg):
    model, _ = load_model_and_tokenizer(cfg.model)
    return cfg.objective.speed(cfg.method.apply(model, MethodContext()), cfg)


def test_sft_run_packs_and_chunks_by_default_and_records_it(tmp_path):
    cfg = config(tmp_path)
    assert cfg.data.packing and cfg.train.chunked_loss and not cfg.train.compile
    result = train(cfg, progress=False)
    (run,) = list_runs(resolve_tracking_uri(None, tmp_path))
    tags = run["tags"]
    assert tags["oneml.switch.packing"] == "true"
    assert tags["oneml.switch.chunked_loss"] == "true"
    assert tags["oneml.switch.compile"] == "false"
    # every speed switch is on; the one memory switch that is off by default says why (it costs CPU time)
    assert [k for k in tags if k.endswith("_off_reason")] == ["oneml.switch.return_memory_off_reason"]
    # a packed row has no padding, so every token of the batches counts
    assert result.metrics["train_tokens"] > 0


@pytest.mark.parametrize(
    ("extra", "packing", "reason"),
    [
        (["method.name=prefix"], False, "prefix_tuning prepends virtual tokens"),
        (["objective.name=dpo", "data.dataset=dpo-demo", "data.max_length=512"], False, "dpo batches are not packed"),
        (["data.packing=false"], False, ""),
    ],
)
def test_packing_is_off_with_the_reason_where_it_is_not_exact(tmp_path, extra, packing, reason):
    speed = speed_of(config(tmp_path, *extra))
    assert speed.packing is packing
    assert reason in speed.packing_reason and bool(reason) == bool(speed.packing_reason)
    assert speed.chunked_loss  # independent of packing
    tags = speed.tags()
    assert tags["oneml.switch.packing"] == "false"
    assert tags.get("oneml.switch.packing_off_reason", "") == speed.packing_reason


def test_chunked_loss_off_for_models_that_scale_their_logits(tmp_path):
    cfg = config(tmp_path)
    model, _ = load_model_and_tokenizer(cfg.model)
    model.config.logit_scale = 0.5
    speed = cfg.objective.speed(cfg.method.apply(model, MethodContext()), cfg)
    assert not speed.chunked_loss and "logit_scale" in speed.chunked_reason
    assert speed.tags()["oneml.switch.chunked_loss_off_reason"] == speed.chunked_reason
