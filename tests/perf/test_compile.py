"""train.compile: torch.compile through transformers (inductor, needs a C compiler) trains to the same result."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from oneml import load_run_config, train

pytestmark = pytest.mark.slow  # the compilation takes ~2 minutes on this 2-core machine


def test_compiled_training_matches_eager(tmp_path):
    base = ["model.name=tiny-llama", "data.dataset=alpaca-demo", "data.max_samples=32", "data.eval_size=8"]
    base += ["data.max_length=96", "train.max_steps=4", "train.batch_size=4", f"tracking.root={tmp_path}"]
    from torch._dynamo.utils import counters

    eager = train(load_run_config(None, base), progress=False)
    counters.clear()
    compiled = train(load_run_config(None, [*base, "train.compile=true"]), progress=False)
    assert counters["stats"]["unique_graphs"] > 0  # dynamo captured and compiled the model's graphs
    assert compiled.config.run_id != eager.config.run_id
    for key in ("eval_loss", "eval_token_accuracy", "train_tokens"):
        assert compiled.metrics[key] == pytest.approx(eager.metrics[key], rel=1e-4), key
    tags = MlflowClient(compiled.tracking_uri).get_run(compiled.mlflow_run_id).data.tags
    assert tags["oneml.switch.compile"] == "true"
