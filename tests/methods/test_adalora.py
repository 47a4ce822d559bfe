"""AdaLoRA: the schedule is checked against the run, the budget follows the paper's cubic schedule down to the
target, the orthogonality penalty matches peft's and reaches the gradients, and the rank diagnostics have the
layer x step shape a heatmap needs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from oneml import OnemlError, load_run_config, train
from oneml.config import ModelConfig
from oneml.methods import MethodContext
from oneml.methods.adalora import AdaLoRAConfig, _svd_factors, orthogonal_penalty
from oneml.models import load_model_and_tokenizer


def tiny_model():
    model, _ = load_model_and_tokenizer(ModelConfig(name="tiny-llama"), device="cpu", seed=0)
    return model


def expected_budget(step: int, b0: int, bT: int, tinit: int, tfinal: int, total: int) -> int:
    """The paper's cubic schedule (Zhang et al. 2023, eq. 8), written out independently of peft."""
    if step <= tinit:
        return b0
    if step > total - tfinal:
        return bT
    return int(bT + (b0 - bT) * (1 - (step - tinit) / (total - tfinal - tinit)) ** 3)


def test_schedule_that_leaves_no_pruning_steps_is_refused():
    with pytest.raises(OnemlError) as err:
        AdaLoRAConfig(tinit=30, tfinal=70).check(MethodContext(max_steps=100))
    message = str(err.value)
    assert "\n" not in message
    assert "method.tinit + method.tfinal" in message and "30 + 70 >= 100" in message
    assert "method.tinit=10 method.tfinal=20" in message


@pytest.mark.parametrize("max_steps", [1, 2, 3, 7, 8, 100, 1000])
def test_default_schedule_is_a_share_of_the_run(max_steps):
    cfg = AdaLoRAConfig()
    cfg.check(MethodContext(max_steps=max_steps))
    assert cfg.schedule(max_steps) == (round(0.1 * max_steps), round(0.2 * max_steps))
    assert cfg.peft_config(max_steps).total_step == max_steps


def test_target_rank_must_be_below_initial_rank():
    with pytest.raises(OnemlError, match=r"^method.target_r: must be below method.init_r \(12\), got 12$"):
        load_run_config(None, ["method.name=adalora", "method.target_r=12"])


def drive(max_steps: int, tinit: int, tfinal: int, gamma: float = 0.0):
    """Apply AdaLoRA to tiny-llama and run its callback over ``max_steps`` fake optimizer steps."""
    torch.manual_seed(0)
    logged, artifacts = [], {}
    ctx = MethodContext(
        max_steps=max_steps,
        diagnostics_every=1,
        log_metrics=lambda metrics, step: logged.append((step, metrics)),
        log_json=artifacts.__setitem__,
    )
    cfg = AdaLoRAConfig(init_r=6, target_r=2, tinit=tinit, tfinal=tfinal, orth_reg_weight=gamma, dropout=0.0)
    model = cfg.apply(tiny_model(), ctx)
    (callback,) = cfg.callbacks(model, ctx)
    params = [p for p in model.parameters() if p.requires_grad]
    state = SimpleNamespace(global_step=0)
    callback.on_train_begin(None, state, None)
    for step in range(max_steps):
        state.global_step = step
        callback.on_step_begin(None, state, None)
        with torch.no_grad():
            for p in params:  # a fake backward, then a plain SGD step
                p.grad = torch.randn_like(p) if p.grad is None else p.grad + torch.randn_like(p)
                p -= 0.01 * p.grad
        callback.on_optimizer_step(None, state, None)
        model.zero_grad()
    state.global_step = max_steps
    callback.on_train_end(None, state, None)
    return model, callback, dict(logged), artifacts


def test_budget_shrinks_from_init_to_target_and_ends_exactly_there():
    total, tinit, tfinal = 20, 3, 5
    model, callback, logged, artifacts = drive(total, tinit, tfinal)
    n = len(callback.e_names)
    assert n == 14  # 2 layers x 7 linear layers (all-linear)
    b0, bT = 6 * n, 2 * n

    totals = [logged[s]["rank_total"] for s in range(total + 1)]
    assert totals[0] == b0
    assert all(a >= b for a, b in zip(totals, totals[1:], strict=False)), totals
    for step in range(1, total + 1):  # deltaT = 1: every step of the pruning phase allocates its budget exactly
        if step > tinit:
            assert totals[step] == expected_budget(step, b0, bT, tinit, tfinal, total), step
            assert logged[step]["rank_budget"] == totals[step]
    assert totals[-1] == bT

    pattern = model.peft_config["default"].rank_pattern
    assert sum(sum(mask) for mask in pattern.values()) == bT
    # The masked triplets' singular values are exactly zero: each layer's effective rank is its allocation.
    for name, param in model.base_model.model.named_parameters():
        if "lora_E" in name:
            assert int((param != 0).sum()) == sum(pattern[name]), name
    assert logged[total]["rank/layers.0.self_attn.q_proj"] == sum(
        pattern["model.layers.0.self_attn.q_proj.lora_E.default"]
    )


def test_rank_matrix_artifact_is_layers_by_steps():
    _, callback, _, artifacts = drive(8, 1, 2)
    ranks = artifacts["adalora_ranks.json"]
    json.dumps(ranks)  # must be serialisable as is
    assert ranks["steps"] == list(range(9))
    assert len(ranks["layers"]) == len(ranks["matrix"]) == 14
    assert all(len(row) == 9 for row in ranks["matrix"])
    assert [sum(col) for col in zip(*ranks["matrix"], strict=True)] == ranks["budget"]
    assert ranks["layers"][0] == "layers.0.self_attn.q_proj"
    assert (ranks["init_r"], ranks["target_r"]) == (6, 2)


def test_orthogonal_penalty_formula_and_parity_with_peft():
    r, d = 3, 8
    q, _ = torch.linalg.qr(torch.randn(d, r))
    assert orthogonal_penalty([q.T, q.T]) == pytest.approx(0.0, abs=1e-6)
    # ||(2I)(2I)^T - I||_F = ||3 I_r||_F = 3 sqrt(r); the mean with an orthonormal factor halves it.
    assert orthogonal_penalty([2 * q.T, q.T]).item() == pytest.approx(3 * r**0.5 / 2, rel=1e-5)

    from peft import AdaLoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(
        tiny_model(),
        AdaLoraConfig(
            init_r=4, target_modules=["q_proj", "v_proj"], total_step=10, orth_reg_weight=1.0, task_type="CAUSAL_LM"
        ),
    )
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.normal_()
    ids = torch.randint(0, 200, (2, 10), generator=torch.Generator().manual_seed(0))
    out = peft_model(input_ids=ids, labels=ids)
    ce = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    mine = orthogonal_penalty(_svd_factors(peft_model.base_model))
    assert (out.loss - ce).item() == pytest.approx(mine.item(), rel=1e-4)


def test_orthogonality_gradient_is_added_at_the_start_of_each_step():
    torch.manual_seed(0)
    ctx = MethodContext(max_steps=10)
    cfg = AdaLoRAConfig(init_r=4, target_r=2, orth_reg_weight=0.3, target_modules=["q_proj"])
    model = cfg.apply(tiny_model(), ctx)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_()
    factors = _svd_factors(model.base_model)
    expected = torch.autograd.grad(0.3 * orthogonal_penalty(factors), factors)
    # peft must not add the penalty a second time (its forward would, into outputs.loss).
    assert model.peft_config["default"].orth_reg_weight == 0.0
    (callback,) = cfg.callbacks(model, ctx)
    callback.on_step_begin(None, SimpleNamespace(global_step=0), None, optimizer=None)
    a = model.base_model.model.model.layers[0].self_attn.q_proj
    torch.testing.assert_close(a.lora_A["default"].grad, expected[0])
    torch.testing.assert_close(a.lora_B["default"].grad, expected[1].T)


def test_real_run_records_the_rank_heatmap_and_ends_at_the_target(tmp_path):
    cfg = load_run_config(
        None,
        [
            "model.name=tiny-llama",
            "method.name=adalora",
            "method.init_r=4",
            "method.target_r=2",
            "data.max_samples=24",
            "data.eval_size=4",
            "data.max_length=64",
            "train.max_steps=6",
            "train.diagnostics_every=2",
            "train.eval_before=false",
            f"tracking.root={tmp_path}",
        ],
    )
    result = train(cfg, progress=False)
    ranks = json.loads((result.run_dir / "diagnostics" / "adalora_ranks.json").read_text())
    assert ranks["steps"] == [0, 2, 4, 6]
    assert len(ranks["matrix"]) == 14 and all(len(row) == 4 for row in ranks["matrix"])
    totals = [sum(col) for col in zip(*ranks["matrix"], strict=True)]
    assert totals[0] == 4 * 14 and totals[-1] == 2 * 14
    saved = json.loads((result.run_dir / "model" / "adapter_config.json").read_text())
    assert sum(sum(mask) for mask in saved["rank_pattern"].values()) == 2 * 14


def test_a_checkpoint_after_the_final_allocation_keeps_the_rank_record(tmp_path, recwarn):
    """peft's save rewrites the live rank pattern's keys without the adapter name; a checkpoint between the final
    allocation and the end of the run (the paper-cpu study's 6-step tuning runs) then broke the last record."""
    overrides = ["model.name=tiny-llama", "method.name=adalora", "method.init_r=4", "method.target_r=2"]
    overrides += ["data.max_samples=24", "data.eval_size=4", "data.max_length=64", "train.max_steps=6"]
    overrides += ["train.save_steps=5", "train.eval_before=false", f"tracking.root={tmp_path}"]
    result = train(load_run_config(None, overrides), progress=False)
    ranks = json.loads((result.run_dir / "diagnostics" / "adalora_ranks.json").read_text())
    assert ranks["steps"][-1] == 6 and sum(row[-1] for row in ranks["matrix"]) == 2 * 14
    assert not [w for w in recwarn if "invalid shape" in str(w.message)]  # peft's ZeRO-3 reading of pruned layers


def test_a_run_stopped_after_allocations_resumes_to_the_uninterrupted_result(tmp_path):
    """Checkpoints at 3 (pruning under way) and 6 (after the final allocation at 5, whose save shrank the saved
    tensors to the kept ranks); SIGTERM at step 7, then the same call: the rerun loads checkpoint-6 at full size with
    the allocator's state and the rank pattern, and ends where the uninterrupted run ends, rank record included."""
    import os
    import signal

    from transformers import TrainerCallback

    from oneml.errors import Interrupted

    class TermAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 7:
                os.kill(os.getpid(), signal.SIGTERM)

    def run(root, callbacks=None):
        overrides = ["model.name=tiny-llama", "method.name=adalora", "method.init_r=4", "method.target_r=2"]
        overrides += ["method.tinit=1", "method.tfinal=3", "method.dropout=0", "data.max_samples=24"]
        overrides += ["data.eval_size=4", "data.max_length=64", "train.max_steps=8", "train.save_steps=3"]
        overrides += ["train.diagnostics_every=2", "train.eval_before=false", f"tracking.root={root}"]
        return train(load_run_config(None, overrides), progress=False, callbacks=callbacks)

    whole = run(tmp_path / "whole")
    with pytest.raises(Interrupted):
        run(tmp_path / "cut", [TermAt()])
    resumed = run(tmp_path / "cut")
    assert resumed.steps_trained == 2  # from checkpoint-6
    assert resumed.metrics["eval_loss"] == pytest.approx(whole.metrics["eval_loss"], abs=1e-6)
    ranks = [json.loads((r.run_dir / "diagnostics" / "adalora_ranks.json").read_text()) for r in (whole, resumed)]
    assert ranks[0] == ranks[1] and sum(row[-1] for row in ranks[0]["matrix"]) == 2 * 14


def test_why_the_penalty_is_ours_the_fused_head_loss_leaves_it_out():
    """peft adds gamma * R to outputs.loss, but TRL's SFTTrainer builds its loss from the fused head's log-probs."""
    from peft import AdaLoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    peft_cfg = AdaLoraConfig(
        init_r=4, target_modules=["q_proj"], total_step=10, orth_reg_weight=1.0, task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(tiny_model(), peft_cfg)
    add_fused_lm_head(peft_model.get_base_model())
    ids = torch.randint(0, 200, (2, 10), generator=torch.Generator().manual_seed(0))
    out = peft_model(input_ids=ids, labels=ids, fused_lm_head=True)
    sft_loss = -out.log_probs.sum() / out.label_mask.sum()  # SFTTrainer.compute_loss
    penalty = orthogonal_penalty(_svd_factors(peft_model.base_model))
    assert penalty.item() > 0.1
    assert (out.loss - sft_loss).item() == pytest.approx(penalty.item(), rel=1e-4)
