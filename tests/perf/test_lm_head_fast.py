"""The LM head's GPU-minded path: bf16 matmuls as exact as the model's own bf16 head, no host sync in its tile
loop, larger CUDA tiles; and the other heads (train.chunked_loss: liger, cce, trl, off) chosen, refused in one
line where they cannot run, and exact against the plain computation where a GPU is present."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from oneml import load_run_config
from oneml.errors import OnemlError
from oneml.methods import MethodContext
from oneml.models import load_model_and_tokenizer
from oneml.models.head_backends import HEADS, resolve
from oneml.models.lm_head import _tiles, chunked_log_probs, install_chunked_head

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def problem(n=64, hidden=48, vocab=3000, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, hidden, generator=gen)
    w = torch.randn(vocab, hidden, generator=gen) * 0.2
    t = torch.randint(0, vocab, (n,), generator=gen)
    upstream = torch.randn(n, generator=gen)  # per-token weights, as DPO's sums give
    return h.to(device), w.to(device), t.to(device), upstream.to(device)


def rel(a, b) -> float:
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


def reference(h, w, t, upstream):
    """fp64 log-probs and gradients (hidden, weight): what every variant is measured against."""
    h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    logps = (h64 @ w64.t()).log_softmax(-1).gather(1, t[:, None])[:, 0]
    return (logps, *torch.autograd.grad((logps * upstream.double()).sum(), [h64, w64]))


def plain(h, w, t):
    """The model's own head + loss: logits in the weights' dtype, log-softmax in fp32."""
    return (h @ w.t()).float().log_softmax(-1).gather(1, t[:, None])[:, 0]


def errors(fn, h, w, t, upstream, dtype):
    hq, wq = h.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
    out = fn(hq, wq, t)
    grads = torch.autograd.grad((out * upstream).sum(), [hq, wq])
    return [rel(x, r) for x, r in zip((out, *grads), reference(h, w, t, upstream), strict=True)]


def test_bf16_head_is_as_exact_as_the_models_own_bf16_head():
    """bf16 operands, fp32 softmax and accumulation: the log-probs and both gradients are no further from fp64
    than the plain bf16 head + fp32 loss is (measured 4.5e-4 / 2.4e-3 / 2.4e-3 against 4.5e-4 / 2.9e-3 / 2.8e-3)."""
    h, w, t, upstream = problem()
    ours = errors(lambda a, b, c: chunked_log_probs(a, b, c, chunk_rows=16, chunk_cols=700)[0], h, w, t, upstream,
                  torch.bfloat16)  # fmt: skip
    base = errors(plain, h, w, t, upstream, torch.bfloat16)
    for got, bound in zip(ours, base, strict=True):
        assert got <= 1.1 * bound + 1e-5, (ours, base)
    assert max(ours) < 1e-2  # bf16 operands: between 1e-3 and 1e-2


def test_under_autocast_the_head_multiplies_in_the_autocast_dtype():
    """fp32 weights under bf16 autocast (a master-weight recipe): the head's matmuls run in bf16 as the model's
    would, and the result keeps the plain head's accuracy."""
    h, w, t, upstream = problem(seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = errors(lambda a, b, c: chunked_log_probs(a, b, c, chunk_rows=16)[0], h, w, t, upstream, torch.float32)
        base = errors(plain, h, w, t, upstream, torch.float32)
    for got, bound in zip(ours, base, strict=True):
        assert got <= 1.1 * bound + 1e-5, (ours, base)
    assert max(base) > 1e-4  # autocast really rounded (fp32 would be ~1e-7)


class Syncs(TorchDispatchMode):
    """Records operators that make the host wait for the device: boolean-mask indexing (a nonzero inside),
    nonzero, item() and masked_select."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        indices = args[1] if name.startswith("aten.index") and len(args) > 1 else None
        if any(getattr(i, "dtype", None) == torch.bool for i in (indices or []) if i is not None):
            self.found.append(f"{name} with a boolean mask")
        if any(k in name for k in ("nonzero", "_local_scalar_dense", "masked_select")):
            self.found.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("stats", [(), ("entropy", "is_top1", "mean_logits")])
def test_the_tile_loop_never_waits_for_the_device(stats):
    """Forward and backward over many tiles (3 chunks x 4 vocabulary tiles) issue no operator that reads a device
    value on the host; the previous backward's boolean-mask scatter did, three times per tile."""
    h, w, t, upstream = problem(n=40, vocab=500)
    h.requires_grad_(), w.requires_grad_()
    with Syncs() as seen:
        out = chunked_log_probs(h, w, t, chunk_rows=16, chunk_cols=128, stats=stats)
        (out[0] * upstream).sum().backward()
    assert seen.found == []


def test_cuda_tiles_are_larger_and_cpu_tiles_unchanged():
    assert _tiles(8192, 151_936, None, None, torch.device("cpu")) == (1024, 4096)  # 16 MiB of fp32 logits
    assert _tiles(8192, 151_936, None, None, torch.device("cuda")) == (4096, 16384)  # 256 MiB
    assert _tiles(100, 151_936, None, None, torch.device("cuda"))[0] == 100


# --- choosing the head ----------------------------------------------------------------------------------------------


def speed(tmp_path, *overrides):
    cfg = load_run_config(
        None, ["model.name=tiny-llama", "data.max_length=96", f"tracking.root={tmp_path}", *overrides]
    )
    model, _ = load_model_and_tokenizer(cfg.model)
    return cfg.objective.speed(cfg.method.apply(model, MethodContext()), cfg)


@pytest.mark.parametrize(
    ("choice", "objective", "head", "installed"),
    [
        ("auto", "sft", "ours", True),
        ("ours", "dpo", "ours", True),
        ("off", "sft", "trl", False),
        ("trl", "dpo", "trl", False),
        ("off", "orpo", "logits", False),
    ],
)
def test_the_head_in_use_is_recorded(tmp_path, choice, objective, head, installed):
    data = [] if objective == "sft" else ["data.dataset=dpo-demo", "data.max_length=512"]
    got = speed(tmp_path, f"train.chunked_loss={choice}", f"objective.name={objective}", *data)
    assert (got.lm_head, got.chunked_loss) == (head, installed)
    assert got.tags()["oneml.switch.lm_head"] == head
    assert got.tags()["oneml.switch.chunked_loss"] == str(installed).lower()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.chunked_loss=liger"], "train.chunked_loss: liger has no CPU backend (Triton kernels)"),
        (["train.chunked_loss=cce"], "train.chunked_loss: cce has no CPU backend (Triton kernels)"),
        (
            ["train.chunked_loss=trl", "objective.name=orpo", "data.dataset=dpo-demo", "data.max_length=512"],
            "train.chunked_loss: trl: TRL's orpo trainer has no fused head",
        ),
    ],
)
def test_a_head_that_cannot_run_here_is_refused_in_one_line(tmp_path, overrides, message):
    if torch.cuda.is_available() and "Triton" in message:
        pytest.skip("the head can run on this machine")
    with pytest.raises(OnemlError) as err:
        speed(tmp_path, *overrides)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_auto_is_ours_on_every_device_until_measured():
    assert resolve(True, "cpu") == resolve(True, "cuda") == "ours"
    assert resolve(False, "cuda") is None and resolve("liger", "cuda") == "liger"


def test_another_head_serves_training_forwards_and_ours_the_evaluation():
    """A backend (here a stand-in with liger's contract: log-probs and top-1, no entropy) computes the training
    loss through our model-level head; forwards without gradients (evaluation, DPO's reference) stay ours, with
    every statistic."""
    torch.manual_seed(0)
    model = load_model_and_tokenizer(load_run_config(None, ["model.name=tiny-llama"]).model)[0]
    calls = []

    def stand_in(hidden, weight, targets, bias, stats):
        calls.append(hidden.shape[0])
        logps, top1 = chunked_log_probs(hidden, weight, targets, bias, stats=("is_top1",))
        nan = torch.full_like(logps, float("nan"))
        return (logps, *[{"is_top1": top1}.get(s, nan) for s in stats])

    install_chunked_head(model, log_probs=stand_in)
    ids = torch.randint(3, 200, (2, 12))
    labels = ids.clone()
    labels[:, :5] = -100
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    assert calls == [14] and torch.isnan(out.entropy[out.label_mask]).all() and out.loss.requires_grad
    with torch.no_grad():
        evaluated = model(input_ids=ids, labels=labels, fused_lm_head=True)
    assert calls == [14] and torch.isfinite(evaluated.entropy).all()
    torch.testing.assert_close(evaluated.loss, out.loss.detach())


def test_missing_statistics_are_not_logged():
    from oneml.train.callbacks import MlflowMetrics

    logged = []
    recorder = type("R", (), {"log_metrics": lambda self, m, step: logged.append(m)})()
    logs = {"loss": 1.5, "entropy": float("nan"), "mean_token_accuracy": 0.25}
    MlflowMetrics(recorder).on_log(None, type("S", (), {"global_step": 3})(), None, logs=logs)
    assert logged == [{"train_loss": 1.5, "train_token_accuracy": 0.25}]


# --- on a GPU -----------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("name", ["ours", "liger", "cce"])
def test_each_head_is_exact_on_cuda_in_bf16(name):
    """Log-probs and gradients (hidden and head weight) no further from fp64 than the plain bf16 head + fp32 loss,
    at a size with several tiles; a head whose package is missing is skipped with the reason."""
    reason = HEADS.get(name).unavailable("cuda", None)
    if reason is not None:
        pytest.skip(f"{name} {reason}")
    fn = HEADS.get(name).log_probs
    h, w, t, upstream = problem(n=5000, hidden=256, vocab=40_000, device="cuda")
    ours = errors(lambda a, b, c: fn(a, b, c, None, ())[0], h, w, t, upstream, torch.bfloat16)
    base = errors(plain, h, w, t, upstream, torch.bfloat16)
    for got, bound in zip(ours, base, strict=True):
        assert got <= 1.5 * bound + 1e-4, (name, ours, base)


@pytest.mark.gpu
@cuda
def test_the_head_never_syncs_on_cuda():
    h, w, t, upstream = problem(n=5000, hidden=256, vocab=40_000, device="cuda")
    h, w = h.bfloat16().requires_grad_(), w.bfloat16()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = chunked_log_probs(h, w, t, stats=("entropy", "is_top1"))
        (out[0] * upstream).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(h.grad).all()
