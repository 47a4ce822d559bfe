"""LoRA+: every lora_B at ratio x lr, everything else at lr, embedding adapters at the reference's fixed rate."""

from __future__ import annotations

import pytest
import torch

from oneml import LoRAConfig, OnemlError, load_run_config
from oneml.config import ModelConfig
from oneml.methods import MethodContext
from oneml.methods.lora import LORAPLUS_EMBEDDING_LR, loraplus_groups
from oneml.methods.loraplus import LoRAPlusConfig
from oneml.models import load_model_and_tokenizer


def tiny(name: str = "tiny-llama") -> torch.nn.Module:
    return load_model_and_tokenizer(ModelConfig(name=name))[0]


def by_name(model: torch.nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters()}


def test_every_b_at_ratio_times_lr_and_the_rest_at_lr():
    cfg = LoRAPlusConfig(r=4, use_dora=True, bias="all", target_modules="all-linear")
    assert cfg.loraplus_ratio == 16
    model = cfg.apply(tiny("tiny-qwen2"), MethodContext())  # q/k/v biases train too (bias: all)
    groups = cfg.optimizer_groups(model, 1e-3)
    names = by_name(model)
    assert [(g["name"], g["lr"]) for g in groups] == [("rest", 1e-3), ("lora_B", pytest.approx(16e-3))]
    rest, b = ([names[id(p)] for p in g["params"]] for g in groups)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(rest + b) == sorted(trainable)  # each trainable weight once
    assert b and all(".lora_B." in n for n in b)
    assert all(".lora_B." not in n for n in rest)
    assert any("lora_magnitude_vector" in n for n in rest) and any(n.endswith("bias") for n in rest)


def test_the_ratio_is_user_settable_and_works_on_any_member_of_the_family():
    assert LoRAConfig().optimizer_groups(tiny(), 1e-3) is None  # no ratio: one group, the runner's default
    method = load_run_config(None, ["method.name=pissa", "method.loraplus_ratio=4", "method.r=4"]).method
    groups = method.optimizer_groups(method.apply(tiny(), MethodContext()), 2e-4)
    assert {g["name"]: g["lr"] for g in groups} == {"rest": 2e-4, "lora_B": pytest.approx(8e-4)}
    with pytest.raises(OnemlError, match=r"^method.loraplus_ratio: must be a positive"):
        load_run_config(None, ["method.name=loraplus", "method.loraplus_ratio=0"])


def test_embedding_adapters_get_the_fixed_reference_rate():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny(), LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"]))
    groups = {g["name"]: g for g in loraplus_groups(model, 1e-3, 16)}
    names = by_name(model)
    assert groups["embedding"]["lr"] == LORAPLUS_EMBEDDING_LR
    assert {names[id(p)].split(".")[-2] for p in groups["embedding"]["params"]} == {
        "lora_embedding_A",
        "lora_embedding_B",
    }
    assert all("q_proj.lora_B" in names[id(p)] for p in groups["lora_B"]["params"])


def test_adamw_keeps_the_ratio_through_the_schedule():
    """The runner hands the groups to AdamW; the Trainer's schedulers scale every group's lr by the same factor."""
    from transformers import get_linear_schedule_with_warmup

    cfg = LoRAPlusConfig(r=4)
    optimizer = torch.optim.AdamW(cfg.optimizer_groups(cfg.apply(tiny(), MethodContext()), 1e-3), lr=1e-3)
    schedule = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=10)
    for _ in range(5):
        optimizer.step()
        schedule.step()
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
        assert lrs["lora_B"] == pytest.approx(16 * lrs["rest"])
