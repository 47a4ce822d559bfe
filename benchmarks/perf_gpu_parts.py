"""The measuring parts of benchmarks/perf_gpu.py: clocks, model FLOPs and MFU, the device's measured bf16 peak,
the LM-head micro-benchmark, and the models and data both sides train on."""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

# --- clocks ---------------------------------------------------------------------------------------------------------


class Timer:
    """CUDA events on a GPU (the stream's own time, no host sync inside the timed region), perf_counter on CPU."""

    def __init__(self):
        self.cuda = torch.cuda.is_available()

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start: Any, end: Any) -> float:
        if not self.cuda:
            return end - start
        end.synchronize()
        return start.elapsed_time(end) / 1000


class StepClock(TrainerCallback):
    """Times steps warmup+1 .. max_steps with one pair of events (no sync per step) and the peak memory of the
    training phase (reset when training begins, read when it ends: the final evaluation is not in it)."""

    def __init__(self, warmup: int):
        self.warmup, self.timer = warmup, Timer()
        self.start = self.end = None
        self.tokens_at: dict[str, float] = {}
        self.peak_bytes = 0
        self.losses: list[float] = []

    @staticmethod
    def _seen(state) -> float:
        """Real tokens so far: oneml counts its packed examples' tokens; a TRL side is told how to count its own
        (padded rows: non-padding; one padding-free row: all)."""
        return float(state.num_input_tokens_seen or 0)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.timer.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start, self.tokens_at["start"] = self.timer.mark(), self._seen(state)
        if state.global_step == state.max_steps:
            self.end, self.tokens_at["end"] = self.timer.mark(), self._seen(state)

    def on_train_end(self, args, state, control, **kwargs):
        if self.timer.cuda:
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def result(self, steps: int) -> dict[str, float]:
        seconds = self.timer.seconds(self.start, self.end)
        tokens = self.tokens_at["end"] - self.tokens_at["start"]
        return {
            "tokens_per_second": tokens / seconds,
            "step_ms": 1000 * seconds / steps,
            "peak_GiB": self.peak_bytes / 2**30,
            "first_loss": self.losses[0] if self.losses else float("nan"),
            "last_loss": self.losses[-1] if self.losses else float("nan"),
        }


# --- FLOPs ----------------------------------------------------------------------------------------------------------


@dataclass
class Shape:
    """Matmul parameters of a decoder-only model, from its config."""

    body: int
    head: int
    layers: int
    attn_width: int

    @classmethod
    def of(cls, config) -> Shape:
        d = config.hidden_size
        head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
        q = config.num_attention_heads * head_dim
        kv = config.num_key_value_heads * head_dim
        layer = d * q * 2 + d * kv * 2 + 3 * d * config.intermediate_size  # q, o, k, v; gate, up, down
        return cls(config.num_hidden_layers * layer, config.vocab_size * d, config.num_hidden_layers, q)


@dataclass
class DataShape:
    """Per real token of the training rows: labelled targets, and sum(l^2) / sum(l) over examples (attention)."""

    labelled_per_token: float
    square_per_token: float

    @classmethod
    def of(cls, rows) -> DataShape:
        lengths = [len(ids) for ids in rows["input_ids"]]
        labelled = sum(sum(1 for y in ys[1:] if y != -100) for ys in rows["labels"])
        return cls(labelled / sum(lengths), sum(n * n for n in lengths) / sum(lengths))


def flops_per_token(shape: Shape, data: DataShape, full: bool) -> float:
    """Model FLOPs per real token (the useful work, whatever a side computes beyond it):

        k N_body + k N_head (labelled fraction) + 6 L d_q (sum l^2 / sum l)

    k = 6 for full fine-tuning (forward 2N, input and weight gradients 4N), 4 for LoRA/QLoRA (forward 2N and input
    gradients 2N: the frozen base gets no weight gradient; the adapters' own FLOPs, under 1%, and 4-bit
    dequantization are not counted). The head counts only for labelled positions, which are all the loss needs.
    Attention (no weights): causal QK^T and AV forward 2 l^2 d_q per example and layer, backward twice that."""
    k = 6 if full else 4
    return (
        k * shape.body
        + k * shape.head * data.labelled_per_token
        + 6 * shape.layers * shape.attn_width * (data.square_per_token)
    )


def measured_peak(size: int = 8192, repeats: int = 10) -> float:
    """Dense bf16 FLOP/s of one large matmul on random data (median of ``repeats`` after 3 warm-ups)."""
    if not torch.cuda.is_available():
        return float("nan")
    a, b = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    timer, times = Timer(), []
    for i in range(3 + repeats):
        start = timer.mark()
        a @ b
        end = timer.mark()
        if i >= 3:
            times.append(timer.seconds(start, end))
    del a, b
    torch.cuda.empty_cache()
    return 2 * size**3 / statistics.median(times)


# --- the LM head alone ----------------------------------------------------------------------------------------------


def lm_head_micro(tokens: int, hidden: int, vocab: int, repeats: int) -> list[dict[str, Any]]:
    """Forward + backward of the head + loss over ``tokens`` labelled positions (frozen head, as under LoRA), for
    each head this machine has: time (median), peak memory above the inputs, and loss / gradient agreement with
    the plain computation (bf16 logits, fp32 cross-entropy)."""
    import torch.nn.functional as F

    from oneml.models.head_backends import HEADS

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(tokens, hidden, device=device, dtype=dtype, generator=gen)
    w = (torch.randn(vocab, hidden, device=device, dtype=dtype, generator=gen) * 0.02).requires_grad_(False)
    t = torch.randint(0, vocab, (tokens,), device=device, generator=gen)

    def plain(x):
        return F.cross_entropy((x @ w.t()).float(), t)

    def trl(x):
        from trl.kernels.chunked_logprob import ChunkedLogProbFunction

        out = ChunkedLogProbFunction.apply(x, w, None, t, 1.0, 32768, None, 1.0, ("log_probs",))
        return -out[0].mean()

    sides = {"plain": plain, "trl": trl}
    for name in ("ours", "liger", "cce"):
        reason = HEADS.get(name).unavailable(device, None)
        fn = HEADS.get(name).log_probs
        sides[name] = reason or (lambda x, fn=fn: -fn(x, w, t, None, ())[0].mean())
    results, reference = [], None  # the first head that runs (plain) is the reference
    for name, fn in sides.items():
        if isinstance(fn, str):
            results.append({"head": name, "skipped": fn})
            continue
        try:
            out = _time_head(name, fn, h, repeats)
        except Exception as err:  # a kernel that fails on this device: recorded, the others still run
            results.append({"head": name, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"})
            continue
        grad = out.pop("grad")
        reference = reference or (out["loss"], grad)
        out["loss_rel_diff"] = abs(out["loss"] - reference[0]) / abs(reference[0])
        out["grad_rel_diff"] = float((grad - reference[1]).norm() / reference[1].norm())
        results.append(out)
    return results


def _time_head(name: str, fn, h, repeats: int) -> dict[str, Any]:
    timer, times = Timer(), []
    if timer.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    for i in range(2 + repeats):
        x = h.detach().requires_grad_()
        start = timer.mark()
        loss = fn(x)
        loss.backward()
        end = timer.mark()
        if i >= 2:
            times.append(timer.seconds(start, end))
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if timer.cuda else float("nan")
    return {"head": name, "ms": 1000 * statistics.median(times), "peak_GiB": peak, "loss": float(loss.detach()),
            "grad": x.grad.float()}  # fmt: skip


# --- models and data ------------------------------------------------------------------------------------------------


@dataclass
class Materialized:
    """A model folder both sides load the usual way (from_pretrained), with the real tokenizer in it."""

    path: Path
    weights: str
    """'real' or 'random (why)'."""
    config: Any = field(repr=False, default=None)


def materialize(arch: dict[str, Any] | Path, tokenizer, overrides: dict[str, Any], device: str, why: str = ""):
    """Random weights for ``arch`` (a preset's config or a config folder), drawn once on ``device`` in bf16 (fp32
    on CPU) and saved with the tokenizer, so that every run of a case loads the same weights in a second."""
    from transformers import AutoModelForCausalLM

    from oneml.models.catalogue import ModelPreset
    from oneml.models.loading import architecture_config

    source = (
        ModelPreset(name="bench", description="", kind="architecture", arch=arch) if isinstance(arch, dict) else arch
    )
    token_ids = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    config = architecture_config(source, overrides, vocab_size=len(tokenizer), token_ids=token_ids)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    path = Path(tempfile.mkdtemp(prefix="oneml-gpu-bench-"))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    release()
    return Materialized(path, "random" + (f" ({why})" if why else ""), config)


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
