"""train.optim, train.tf32, train.kernels and train.compile: regional. Each is recorded on the run, refused in one
line (nothing recorded) where this machine cannot honour it, and trains to the plain computation's result where it
is exact; compilation time is reported apart from the steady rate."""

from __future__ import annotations

import pytest
import torch

from oneml import load_run_config, train
from oneml.config import ModelConfig
from oneml.errors import OnemlError
from oneml.models import load_model_and_tokenizer
from oneml.tracking import list_runs, resolve_tracking_uri
from oneml.train import speedups
from oneml.train.callbacks import CompileClock

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
BASE = ["model.name=tiny-llama", "data.max_samples=24", "data.eval_size=8", "data.max_length=96"]
BASE += ["train.max_steps=3", "train.batch_size=4", "train.eval_before=false", "train.save_adapter=false"]


def run(tmp_path, *extra):
    return train(load_run_config(None, [*BASE, f"tracking.root={tmp_path}", *extra]), progress=False)


def tags(result) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    return MlflowClient(result.tracking_uri).get_run(result.mlflow_run_id).data.tags


def test_optimizers_train_to_the_same_weights_and_are_recorded(tmp_path):
    """auto is transformers' fused AdamW, as every earlier run used; the foreach AdamW computes the same update."""
    auto = run(tmp_path / "a")
    plain = run(tmp_path / "b", "train.optim=adamw_torch")
    assert (
        tags(auto)["oneml.switch.optim"] == "adamw_torch_fused" and tags(plain)["oneml.switch.optim"] == "adamw_torch"
    )
    assert plain.metrics["eval_loss"] == pytest.approx(auto.metrics["eval_loss"], rel=1e-5)
    assert tags(auto)["oneml.switch.tf32"] == "false" and tags(auto)["oneml.switch.kernels"] == "none"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "cls"),
    [("adamw_8bit", "bitsandbytes.optim.adamw.AdamW"), ("adafactor", "transformers.optimization.Adafactor")],
)
def test_other_optimizers_train_and_are_what_the_trainer_built(tmp_path, name, cls):
    from transformers import TrainerCallback

    seen = []

    class Record(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            built = type(getattr(optimizer, "optimizer", optimizer))
            seen.append(f"{built.__module__}.{built.__name__}")
            if "bitsandbytes" in built.__module__:  # transformers' adamw_bnb_8bit: bitsandbytes' AdamW at 8 bits
                seen.append(optimizer.optimizer.args.optim_bits)

    cfg = load_run_config(None, [*BASE, f"tracking.root={tmp_path}", f"train.optim={name}", "train.learning_rate=1e-2"])
    result = train(cfg, progress=False, callbacks=[Record()])
    assert seen == ([cls, 8] if "bitsandbytes" in cls else [cls]) and tags(result)["oneml.switch.optim"] == name
    trained = [p for n, p in result.model.named_parameters() if "lora_B" in n]  # zeros at LoRA's init
    assert trained and all(p.abs().sum() > 0 for p in trained) and result.metrics["eval_loss"] < 6.0


def test_a_methods_own_groups_get_the_configured_optimizer():
    weights = torch.nn.Parameter(torch.zeros(3))
    groups = [{"params": [weights], "lr": 1e-3}]
    assert type(speedups.build_optimizer("adafactor", groups, 1e-3, 0.0)).__name__ == "Adafactor"
    fused = speedups.build_optimizer("adamw_torch_fused", groups, 1e-3, 0.0)
    assert fused.defaults["fused"] is True and speedups.build_optimizer("adamw_torch", groups, 1e-3, 0.0).defaults[
        "fused"
    ] in (None, False)
    # auto over a method's own groups is the optimizer transformers builds for every other method (fused AdamW
    # on torch >= 2.8), so LoRA+ and the LoRA it is compared with train with the same kernel
    from transformers import TrainingArguments

    default = speedups.resolve("auto")
    assert speedups.OPTIMIZERS.get(default).trainer_name == str(TrainingArguments.__dataclass_fields__["optim"].default)
    assert speedups.build_optimizer("auto", groups, 1e-3, 0.0).defaults["fused"] is (default == "adamw_torch_fused")
    model, _ = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))
    for name, extra in (("loraplus", []), ("lisa", ["method.layers=1"])):  # LoRA+'s groups, LISA's every parameter
        cfg = load_run_config(None, [*BASE, f"method.name={name}", *extra, "train.optim=adafactor"])
        applied = cfg.method.apply(model, _context()) if name == "loraplus" else model
        build = speedups.OPTIMIZERS.get(cfg.train.optim).build
        built = cfg.method.optimizer(applied, 1e-3, 0.0, build)
        assert type(built).__name__ == "Adafactor", name
        auto = load_run_config(None, [*BASE, f"method.name={name}", *extra])
        assert speedups.optimizer_in_use("auto", auto.method, applied, 1e-3) == default  # what it trains with
        if name == "loraplus":
            model, _ = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))
    lora = load_run_config(None, BASE)
    assert speedups.optimizer_in_use("adafactor", lora.method, model, 1e-3) == "adafactor"


def test_a_method_with_its_own_optimizer_records_it_and_refuses_another(tmp_path):
    pytest.importorskip("galore_torch")
    cfg = load_run_config(None, [*BASE, "method.name=galore"])
    assert speedups.optimizer_in_use("auto", cfg.method, None, 1e-3) == "galore_adamw"
    refused = load_run_config(None, [*BASE, "method.name=galore", "train.optim=adafactor", f"tracking.root={tmp_path}"])
    with pytest.raises(OnemlError) as err:
        train(refused, progress=False)
    assert str(err.value).startswith("train.optim: method galore trains with its own optimizer (galore_adamw)")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _context():
    from oneml.methods import MethodContext

    return MethodContext()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("train.optim=paged_adamw_8bit", "train.optim: paged_adamw_8bit pages optimizer state through CUDA"),
        ("train.tf32=true", "train.tf32: TF32 is a CUDA tensor-core mode"),
        ("train.kernels=liger", "train.kernels: liger has no CPU backend"),
    ],
)
def test_switches_this_machine_cannot_honour_are_refused_before_anything_is_recorded(tmp_path, extra, message):
    if torch.cuda.is_available():
        pytest.skip("CPU refusals")
    with pytest.raises(OnemlError) as err:
        run(tmp_path, extra)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert list_runs(resolve_tracking_uri(None, tmp_path)) == []


def test_steady_rate_and_compile_time_leave_out_the_warm_up_steps():
    clock = CompileClock()
    clock.steps = [(30.0, 100.0), (5.0, 200.0), (1.0, 300.0), (1.2, 400.0), (0.8, 500.0)]
    out = clock.metrics()
    assert out["steady_tokens_per_second"] == pytest.approx(300 / 3.0)
    assert out["compile_seconds"] == pytest.approx(35.0 - 2 * 1.0)
    clock.steps = clock.steps[:2]
    assert clock.metrics() == {}


def test_regional_compilation_compiles_each_decoder_layer_in_place():
    model = load_model_and_tokenizer(load_run_config(None, ["model.name=tiny-llama"]).model)[0]
    layers = speedups.decoder_layers(model)
    assert len(layers) == model.config.num_hidden_layers == speedups.compile_regions(model)
    assert all(layer._compiled_call_impl is not None for layer in layers)
    with pytest.raises(OnemlError, match="train.compile: regional found no decoder layers"):
        speedups.compile_regions(torch.nn.Linear(2, 2))


@pytest.mark.slow  # inductor compiles the layer on CPU: a minute or two on the shared 2-core machine
def test_regionally_compiled_training_matches_eager_without_a_compile_per_shape(tmp_path):
    from torch._dynamo.utils import counters
    from transformers import TrainerCallback

    graphs = []

    class Graphs(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            graphs.append(counters["stats"]["unique_graphs"])

    extra = ["train.max_steps=5", "train.logging_steps=1"]
    eager = run(tmp_path / "eager", *extra)
    counters.clear()
    cfg = load_run_config(None, [*BASE, f"tracking.root={tmp_path / 'compiled'}", *extra, "train.compile=regional"])
    compiled = train(cfg, progress=False, callbacks=[Graphs()])
    # Packed rows change length at every step: dynamic shapes compile the layer once per variant, whatever the
    # length: the first layer (its input needs no gradient under LoRA) and the rest, each for batches of one row
    # (dynamo specialises a dimension of size 1) and of several; a compile per shape would add graphs every step.
    assert graphs[0] >= 2 and max(graphs) <= 4, graphs
    for key in ("eval_loss", "eval_token_accuracy", "train_tokens"):
        assert compiled.metrics[key] == pytest.approx(eager.metrics[key], rel=1e-4), key
    assert compiled.metrics["compile_seconds"] > 0 and compiled.metrics["steady_tokens_per_second"] > 0
    assert "compile_seconds" not in eager.metrics and tags(compiled)["oneml.switch.compile"] == "regional"


# --- on a GPU -----------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@cuda
def test_liger_kernels_keep_the_loss_and_gradients():
    """Liger's RMSNorm, SwiGLU and RoPE in a LoRA model (bf16): loss and adapter gradients of the plain model's
    within bf16 rounding."""
    import copy

    from peft import LoraConfig, get_peft_model

    if (reason := speedups._liger("cuda")) is not None:
        pytest.skip(f"liger {reason}")
    torch.manual_seed(0)
    base = load_model_and_tokenizer(load_run_config(None, ["model.name=tiny-qwen2", "model.dtype=bfloat16"]).model,
                                    device="cuda")[0]  # fmt: skip
    fused = copy.deepcopy(base)
    speedups.apply_kernels(fused, "liger")
    lora = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    ids = torch.randint(3, 250, (2, 64), device="cuda")
    results = []
    for model in (base, fused):
        torch.manual_seed(1)
        peft_model = get_peft_model(model, copy.deepcopy(lora))
        loss = peft_model(input_ids=ids, labels=ids).loss
        grads = torch.autograd.grad(loss, [p for p in peft_model.parameters() if p.requires_grad])
        results.append((loss, grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=2e-2, atol=2e-3)
    for got, want in zip(results[1][1], results[0][1], strict=True):
        assert float((got - want).float().norm() / want.float().norm()) < 5e-2


@pytest.mark.gpu
@cuda
def test_tf32_is_on_for_its_run_only(tmp_path):
    result = run(tmp_path / "a", "train.tf32=true", "model.dtype=float32")
    assert tags(result)["oneml.switch.tf32"] == "true"
    run(tmp_path / "b", "model.dtype=float32")  # the next run in this process asked for none: it gets none
    assert not torch.backends.cuda.matmul.allow_tf32
