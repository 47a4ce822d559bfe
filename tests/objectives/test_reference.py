"""The reference of DPO and KTO is the starting model, whatever the method's init and whichever way it is kept: the
log-probs TRL trains against and the ones the evaluation scores equal those of an untouched copy of the base; the
default picks a reference each method allows; a choice the method cannot give is refused in one line."""

from __future__ import annotations

import copy

import pytest
import torch

from oneml import OnemlError, load_run_config
from oneml.methods import METHODS, MethodContext
from oneml.models import load_model_and_tokenizer
from oneml.objectives import Speed, TrainerInputs
from oneml.objectives.preference import sequence_logps, tokenize_pairs
from oneml.objectives.reference import REFERENCE_ADAPTER, reference_of
from oneml.train.arguments import trainer_args

MUTATING = [
    ["method.name=pissa"],
    ["method.name=lora", "method.init=olora"],
    ["method.name=pissa", "method.use_dora=true"],
]


def build(tmp_path, objective: str, *extra: str):
    """(the objective's trainer over the method-applied model, an untouched copy of the starting model, the config)."""
    data = "dpo-demo"
    cfg = load_run_config(
        None,
        [
            "model.name=tiny-llama",
            f"objective.name={objective}",
            f"data.dataset={data}",
            "data.max_samples=12",
            "data.eval_size=4",
            "data.max_length=64",
            "train.batch_size=4",
            "train.max_steps=2",
            f"tracking.root={tmp_path}",
            *extra,
        ],
    )
    model, tokenizer = load_model_and_tokenizer(cfg.model, seed=cfg.train.seed)
    untouched = copy.deepcopy(model).eval()
    prepared = cfg.objective.prepare(cfg.data, tokenizer)
    reference = cfg.objective.reference_model(model, cfg.method)
    policy = cfg.method.apply(model, MethodContext(max_steps=cfg.train.max_steps))
    inputs = TrainerInputs(
        model=policy,
        tokenizer=tokenizer,
        train_dataset=prepared.train,
        eval_dataset=prepared.eval,
        args=trainer_args(cfg, "cpu", torch.float32, tmp_path / "out"),
        callbacks=[],
        optimizers=(None, None),
        max_length=cfg.data.max_length,
        speed=Speed(),
        ref_model=reference,
    )
    return cfg.objective.build_trainer(inputs), untouched, cfg, prepared, tokenizer


def logps(model, items, side="chosen"):
    return sequence_logps(model, items, side, 0, 4)[0]


@pytest.mark.parametrize("method", MUTATING, ids=lambda m: "+".join(x.split("=")[1] for x in m))
def test_dpo_reference_of_a_mutating_init_is_the_untouched_base(tmp_path, method):
    """PiSSA/OLoRA move part of W0 into the adapter: TRL's copy of the adapter would rerun the SVD/QR on the residual
    (changing the policy's base too); the copy is made without it, so reference and policy start at W0."""
    trainer, untouched, cfg, data, tokenizer = build(tmp_path, "dpo", *method)
    assert cfg.objective.reference == "adapter"  # auto: these methods can keep a frozen copy of their adapter
    assert REFERENCE_ADAPTER in trainer.model.peft_config
    items = tokenize_pairs(data.eval, tokenizer, cfg.data.max_length)
    expected = logps(untouched, items)
    trainer.model.eval()
    torch.testing.assert_close(logps(trainer.model, items), expected, atol=2e-4, rtol=1e-5)  # the policy at init
    with reference_of(trainer) as ref:
        torch.testing.assert_close(logps(ref, items), expected, atol=2e-4, rtol=1e-5)
    # What TRL itself trains against, on a training batch, equals the untouched base's log-probs of that batch.
    batch = next(iter(trainer.get_train_dataloader()))
    ref_chosen, _ = trainer.compute_ref_log_probs(trainer.model, batch)
    with torch.no_grad():  # `logps` gave the untouched model TRL's fused head
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        out = untouched(batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels, fused_lm_head=True)
        base_chosen = out.log_probs.sum(-1).chunk(2)[0]
    torch.testing.assert_close(ref_chosen, base_chosen, atol=2e-4, rtol=1e-5)


def test_the_reference_adapter_is_not_saved_with_the_result(tmp_path):
    trainer, *_ = build(tmp_path, "dpo")
    assert REFERENCE_ADAPTER in trainer.model.peft_config
    load_run_config(None, ["objective.name=dpo"]).objective.finished(trainer)
    trainer.model.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved" / REFERENCE_ADAPTER).exists()
    assert list(trainer.model.peft_config) == ["default"]


@pytest.mark.parametrize("method", METHODS.names())
def test_auto_picks_a_reference_every_method_allows(method):
    required = ["method.type=HIRA"] if method == "peft" else []  # the escape hatch names a peft type
    cfg = load_run_config(None, ["objective.name=dpo", f"method.name={method}", *required])
    expected = "copy" if cfg.method.frozen_copy_refusal() else "adapter"
    assert cfg.objective.reference == expected
    cfg.objective.check(cfg.method)  # the resolved choice is never refused


@pytest.mark.parametrize("method", ["full", "bottleneck", "adalora", "sorsa"])
def test_adapter_reference_is_refused_where_no_copy_can_be_made(method):
    cfg = load_run_config(None, ["objective.name=dpo", f"method.name={method}", "objective.reference=adapter"])
    with pytest.raises(OnemlError) as err:
        cfg.objective.check(cfg.method)
    text = str(err.value)
    assert text.startswith("objective.reference: 'adapter'") and "use reference: copy or precomputed" in text
    assert cfg.method.frozen_copy_refusal() in text and "\n" not in text


def test_auto_keeps_the_run_id_of_the_old_default():
    """`reference: adapter` was the default: a LoRA run resolves auto to it and keeps its run id."""
    assert (
        load_run_config(None, ["objective.name=dpo"]).run_id
        == load_run_config(None, ["objective.name=dpo", "objective.reference=adapter"]).run_id
    )


@pytest.mark.slow
@pytest.mark.parametrize(("method", "objective"), [("adalora", "dpo"), ("sorsa", "kto"), ("lora", "kto")])
def test_a_precomputed_reference_is_scored_then_freed(tmp_path, monkeypatch, method, objective):
    """AdaLoRA and SORSA keep no copy of their adapter: their precomputed reference comes from a copy of the starting
    model, dropped once every evaluation has scored it; LoRA's comes from TRL's adapter copy (no model copy)."""
    from oneml import train
    from oneml.objectives.reference import UsesReference

    held = []
    scored = UsesReference.reference_scored

    def watch(self, trainer):
        held.append(trainer.ref_model is not None)
        scored(self, trainer)
        held.append(trainer.ref_model is not None)

    monkeypatch.setattr(UsesReference, "reference_scored", watch)
    extra = ["method.tinit=0", "method.tfinal=0", "train.max_steps=3"] if method == "adalora" else []
    cfg = load_run_config(
        None,
        [
            "model.name=tiny-llama", f"method.name={method}", f"objective.name={objective}",
            "objective.reference=precomputed", "data.dataset=dpo-demo", "data.max_samples=16", "data.eval_size=4",
            "data.max_length=64", "train.max_steps=2", "train.batch_size=2", f"tracking.root={tmp_path}", *extra,
        ],
    )  # fmt: skip
    result = train(cfg, progress=False)
    assert held == ([True, False] if method != "lora" else [False, False])
    assert result.metrics["initial_eval_kl_ref"] == pytest.approx(0.0, abs=1e-5)  # the policy starts at it
    assert result.metrics["steps"] == cfg.train.max_steps
