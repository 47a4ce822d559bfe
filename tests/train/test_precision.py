"""Precision recipes on the CPU side: what each run records, float32 master weights for full fine-tuning where the
model loads in half precision by oneml's choice, and the step timer that keeps the warm-up step out of tokens/s."""

from __future__ import annotations

import types

import pytest
import torch

from oneml.config import ModelConfig
from oneml.methods import MethodContext
from oneml.methods.full import FullConfig
from oneml.models import load_model_and_tokenizer
from oneml.train import callbacks
from oneml.train.arguments import precision_recipe
from oneml.train.callbacks import StepTimer


def fake_trainer(dtypes: list[torch.dtype], bf16: bool = False, fp16: bool = False):
    model = torch.nn.Module()
    for i, dtype in enumerate(dtypes):
        model.register_parameter(f"w{i}", torch.nn.Parameter(torch.zeros(2, dtype=dtype)))
    model.register_parameter("frozen", torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16), requires_grad=False))
    return types.SimpleNamespace(model=model, args=types.SimpleNamespace(bf16=bf16, fp16=fp16))


@pytest.mark.parametrize(
    "dtypes, bf16, fp16, recipe",
    [
        ([torch.float32], False, False, "fp32"),
        ([torch.float32], True, False, "bf16-mixed"),  # master weights, bf16 autocast
        ([torch.bfloat16], True, False, "bf16"),  # no float32 copy (TRL's QLoRA adapters; a pure-bf16 full run)
        ([torch.float32], False, True, "fp16-mixed"),
        ([torch.bfloat16, torch.float32], True, False, "mixed(bf16,fp32)"),
    ],
)
def test_precision_recipe_is_read_off_the_trained_weights_and_autocast(dtypes, bf16, fp16, recipe):
    assert precision_recipe(fake_trainer(dtypes, bf16, fp16)) == recipe


def test_full_fine_tuning_keeps_float32_master_weights_of_a_half_precision_model():
    model = load_model_and_tokenizer(ModelConfig(name="tiny-llama", dtype="bfloat16"))[0]
    model.config.tie_word_embeddings = True
    model.tie_weights()
    FullConfig().apply(model, MethodContext(master_dtype="float32"))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert all(p.requires_grad for p in model.parameters())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still one tensor


def test_full_fine_tuning_of_an_explicitly_half_precision_model_stays_half():
    """model.dtype: bfloat16 set by the user: the pure-bf16 recipe (half the memory), as asked."""
    model = load_model_and_tokenizer(ModelConfig(name="tiny-llama", dtype="bfloat16"))[0]
    FullConfig().apply(model, MethodContext(master_dtype=None))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_step_timer_measures_throughput_after_the_warm_up_step(monkeypatch):
    """A 5 s first step (compilation, kernel selection) and three 1 s steps of 100 tokens each: 100 tokens/s,
    not 400 / 8 s; a one-step run falls back to its only step."""
    clock = iter([0.0, 5.0, 5.0, 6.0, 6.0, 7.0, 7.0, 8.0])
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    timer, args = StepTimer(), types.SimpleNamespace(device=torch.device("cpu"))
    state = types.SimpleNamespace(global_step=0, max_steps=4, num_input_tokens_seen=0)
    for _ in range(4):
        timer.on_step_begin(args, state, None)
        state.global_step += 1
        state.num_input_tokens_seen += 100
        timer.on_step_end(args, state, None)
    assert timer.throughput(400) == {"train_seconds": 8.0, "first_step_seconds": 5.0, "tokens_per_second": 100.0}
    one = StepTimer()
    one.first_seconds, one.seconds = 2.0, 0.0
    assert one.throughput(100)["tokens_per_second"] == 50.0


def test_a_full_run_where_oneml_chose_bfloat16_trains_float32_master_weights(tmp_path, monkeypatch):
    """The GPU's choice (dtype auto -> bfloat16) simulated on the CPU: the run trains float32 weights under bf16
    autocast and records bf16-mixed; the same run with bfloat16 set explicitly trains and records pure bf16."""
    from mlflow.tracking import MlflowClient

    from oneml import load_run_config, train
    from oneml.models import loading

    chosen = loading.resolve_dtype
    monkeypatch.setattr(
        loading, "resolve_dtype", lambda name, device: torch.bfloat16 if name == "auto" else chosen(name, device)
    )
    base = ["model.name=tiny-llama", "method.name=full", "data.dataset=alpaca-demo", "data.max_samples=16",
            "data.eval_size=4", "data.max_length=64", "train.max_steps=2", "train.batch_size=2",
            "train.eval_before=false", "train.save_adapter=false", f"tracking.root={tmp_path}"]  # fmt: skip
    recipes = {}
    for dtype in ("auto", "bfloat16"):
        result = train(load_run_config(None, [*base, f"model.dtype={dtype}"]), progress=False)
        tags = MlflowClient(result.tracking_uri).get_run(result.mlflow_run_id).data.tags
        recipes[dtype] = (tags["oneml.switch.precision"], {p.dtype for p in result.model.parameters()})
    assert recipes == {"auto": ("bf16-mixed", {torch.float32}), "bfloat16": ("bf16", {torch.bfloat16})}
