"""The method x objective matrix, derived from the registries: every registered method with every registered objective,
through the real `oneml.train()` on a tiny Llama (2 steps).

Each pair the libraries allow: the trainable weights change and the frozen ones do not; the saved result loaded onto a
fresh base gives the trained model's logits (a reward model's scores); a mergeable method gives them merged too; with
SFT the held-out loss falls; every objective records its held-out metrics before and after training. Each pair in
`OBJECTIVE_REFUSALS` (the one list of refused pairs) is refused with its reason. The default suite trains every method
once (SFT) and LoRA with each objective added since (KTO, CPO, SimPO, reward); the rest of the cross product is
marked slow (`-m slow`).
Method-specific math lives in each method's own tests (test_tuners.py for the peft tuners).
"""

from __future__ import annotations

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import TrainerCallback

from oneml import OnemlError, load_run_config, train
from oneml.methods import METHODS, OBJECTIVE_REFUSALS
from oneml.models import load_model_and_tokenizer
from oneml.objectives import OBJECTIVES

TINY_OVERRIDES: dict[str, list[str]] = {
    # Defaults are sized for real models; tiny-llama's k/v projections are 32 wide, its layers 64 and 128.
    "c3a": ["method.block_size=16"],
    "vblora": ["method.vector_length=16", "method.num_vectors=32"],
    "road": ["method.group_size=16"],
    "shira": ["method.r=8"],
    "peft": ["method.type=HIRA", "method.config={r: 4, target_modules: [q_proj, v_proj]}"],  # a tuner without a file
}
DATASETS = {"sft": "alpaca-demo", "preference": "dpo-demo", "unpaired": "dpo-demo"}
"""An objective's data kind -> a dataset of that kind (a new kind fails here, loudly, until it has one)."""
DEFAULT_SUITE_OBJECTIVES = ("kto", "cpo", "simpo", "reward")
"""Objectives trained with LoRA in the default suite (besides SFT with every method)."""
IDS = torch.randint(0, 255, (2, 20), generator=torch.Generator().manual_seed(1))


def pairs():
    for method in METHODS.names():
        for objective in OBJECTIVES.names():
            if (method, objective) in OBJECTIVE_REFUSALS:
                continue
            fast = objective == "sft" or (method == "lora" and objective in DEFAULT_SUITE_OBJECTIVES)
            marks = () if fast else (pytest.mark.slow,)
            yield pytest.param(method, objective, marks=marks, id=f"{method}-{objective}")


class WeightWatch(TrainerCallback):
    """Snapshots every parameter when training starts and compares when it ends."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: (p, p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.changed = {n: not torch.equal(p.detach(), start) for n, (p, start, _) in self.before.items()}
        self.trainable = {n for n, (_, _, grad) in self.before.items() if grad}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("matrix-runs")  # one MLflow store for the module: a new one costs seconds


def config(method: str, objective: str, root, *extra: str):
    kind = OBJECTIVES.get(objective).data_kind
    assert kind in DATASETS, f"objective {objective}: add a dataset of kind {kind!r} to DATASETS"
    return load_run_config(
        None,
        [
            "model.name=tiny-llama",
            f"method.name={method}",
            f"objective.name={objective}",
            f"data.dataset={DATASETS[kind]}",
            "data.max_samples=24",
            "data.eval_size=4",
            "data.max_length=96",
            "train.max_steps=2",
            "train.batch_size=2",
            "train.learning_rate=0.01",
            "train.warmup_ratio=0",
            f"tracking.root={root}",
            *TINY_OVERRIDES.get(method, []),
            *extra,
        ],
    )


@pytest.mark.parametrize(("method", "objective"), pairs())
def test_pair_trains_saves_loads_and_merges(method, objective, root):
    cfg = config(method, objective, root)
    watch = WeightWatch()
    result = train(cfg, progress=False, callbacks=[watch])

    assert watch.trainable, f"{method}: nothing trainable"
    frozen_changed = [n for n in watch.before if n not in watch.trainable and watch.changed[n]]
    assert not frozen_changed, f"{method}: frozen weights changed: {frozen_changed[:3]}"
    assert any(watch.changed[n] for n in watch.trainable), f"{method}: no trainable weight changed"
    if objective == "sft":
        assert result.metrics["eval_loss"] < result.metrics["initial_eval_loss"], method
    assert {"eval_loss", "initial_eval_loss"} <= set(result.metrics), f"{method} x {objective}: no held-out loss"

    trained = result.model.eval()
    with torch.no_grad():
        expected = trained(IDS).logits
        base, _ = load_model_and_tokenizer(cfg.model, device="cpu", seed=cfg.train.seed)
        reloaded = cfg.method.load(cfg.objective.with_head(base), result.run_dir / "model").eval()
        torch.testing.assert_close(reloaded(IDS).logits, expected, atol=1e-4, rtol=1e-4)
        if cfg.method.mergeable:
            merged = cfg.method.merge(reloaded).eval()
            assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules()), f"{method}: adapter layers left"
            torch.testing.assert_close(merged(IDS).logits, expected, atol=1e-3, rtol=1e-3)


def test_the_refusal_table_names_registered_pairs():
    for method, objective in OBJECTIVE_REFUSALS:
        assert method in METHODS and objective in OBJECTIVES, (method, objective)
        assert METHODS.get(method)().objective_refusal(objective) == OBJECTIVE_REFUSALS[(method, objective)]


@pytest.mark.parametrize(("method", "objective"), list(OBJECTIVE_REFUSALS))
def test_refused_pairs_are_refused_with_their_reason_before_a_run_is_recorded(method, objective, tmp_path):
    with pytest.raises(OnemlError) as err:
        train(config(method, objective, tmp_path), progress=False)
    assert OBJECTIVE_REFUSALS[(method, objective)] in str(err.value)
    assert not any((tmp_path / "runs").glob("*"))
