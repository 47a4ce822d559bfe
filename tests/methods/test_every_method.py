"""Every registered method, on a tiny model, through the real run: the matrix derives from the registry.

For each method: a few CPU steps lower the loss; trainable weights change and frozen ones don't;
save -> load onto a fresh base gives identical logits; mergeable methods give the same logits merged.
Method-specific math (PiSSA's reconstruction, SORSA's regulariser, ...) lives in each method's own tests.
"""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from oneml import load_run_config, train
from oneml.methods import METHODS
from oneml.models import load_model_and_tokenizer

# Per-method settings for a meaningful few-step run on a tiny model (defaults are sized for real models).
TINY_OVERRIDES: dict[str, list[str]] = {}


class WeightWatch(TrainerCallback):
    """Snapshots every parameter when training starts and compares when it ends."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: (p, p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.changed = {n: not torch.equal(p.detach(), start) for n, (p, start, _) in self.before.items()}
        self.trainable = {n for n, (_, _, grad) in self.before.items() if grad}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("method-runs")


@pytest.mark.parametrize("name", METHODS.names())
def test_method_trains_saves_loads_merges(name, root):
    cfg = load_run_config(
        None,
        [
            "model.name=tiny-llama",
            f"method.name={name}",
            "data.max_samples=48",
            "data.eval_size=8",
            "data.max_length=96",
            "train.max_steps=8",
            "train.batch_size=4",
            "train.learning_rate=0.01",
            "train.warmup_ratio=0",
            f"tracking.root={root}",
            *TINY_OVERRIDES.get(name, []),
        ],
    )
    watch = WeightWatch()
    result = train(cfg, progress=False, callbacks=[watch])

    assert result.metrics["eval_loss"] < result.metrics["initial_eval_loss"], name
    assert watch.trainable, f"{name}: nothing trainable"
    frozen_changed = [n for n in watch.before if n not in watch.trainable and watch.changed[n]]
    assert not frozen_changed, f"{name}: frozen weights changed: {frozen_changed[:3]}"
    assert any(watch.changed[n] for n in watch.trainable), f"{name}: no trainable weight changed"

    method = cfg.method
    ids = torch.randint(0, 255, (2, 20), generator=torch.Generator().manual_seed(1))
    trained = result.model.eval()
    with torch.no_grad():
        expected = trained(ids).logits
        base, _ = load_model_and_tokenizer(cfg.model, device="cpu", seed=cfg.train.seed)
        reloaded = method.load(base, result.run_dir / "model").eval()
        torch.testing.assert_close(reloaded(ids).logits, expected, atol=1e-4, rtol=1e-4)
        if method.mergeable:
            merged = method.merge(reloaded).eval()
            assert not any("lora_" in n for n, _ in merged.named_parameters())
            torch.testing.assert_close(merged(ids).logits, expected, atol=1e-3, rtol=1e-3)
