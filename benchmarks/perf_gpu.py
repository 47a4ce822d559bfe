"""GPU: tokens/s, peak memory and MFU of LoRA SFT on random-init Qwen2.5-0.5B / 3B architectures (bf16), oneml's
defaults (padding-free packing + chunked head) vs the plain TRL run, when a CUDA device is present.

    .venv/bin/python benchmarks/perf.py --only gpu-0.5b --only gpu-3b
    ONEML_PERF_GPU="compile,liger,packing" .venv/bin/python benchmarks/perf.py --only gpu-0.5b

ONEML_PERF_GPU switches, applied to both sides where each has them: ``packing`` (the baseline also runs
padding-free: TRL's ``padding_free``), ``compile`` (torch.compile: oneml ``train.compile``, TRL ``torch_compile``),
``liger`` (Liger kernels: TRL ``use_liger_kernel``; oneml has no kernel switch, so its side stays as is and the
run records ``kernels: none``). Data: alpaca-demo through the byte tokenizer (random weights, so only lengths
matter), max_length 1024, batch 8, 20 steps, LoRA r=16 on every linear layer.

MFU on the 4N-per-token basis (LoRA: 2N forward + 2N for the activation gradients, no weight gradients of the
frozen base; N = parameters used in matmuls, the head counted once): tokens/s x 4N / the device's dense bf16 peak.
"""

from __future__ import annotations

import os

import perf_steps
from perf_core import Benchmark, Measure, register

PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}
"""Dense bf16 tensor-core peak FLOP/s by device name."""
MODELS = {"0.5b": "qwen2.5-0.5b", "3b": "qwen2.5-3b"}


def _switches() -> set[str]:
    return {s.strip() for s in os.environ.get("ONEML_PERF_GPU", "").split(",") if s.strip()}


def _no_gpu() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no CUDA device here; run it where one is lent"


def _matmul_params(spec: str) -> int:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(perf_steps._base_dir(spec))
    head, d, kv = (
        c.vocab_size * c.hidden_size,
        c.hidden_size,
        c.num_key_value_heads * (c.hidden_size // c.num_attention_heads),
    )
    layer = d * d * 2 + d * kv * 2 + 3 * d * c.intermediate_size  # q, o, k, v, gate/up/down
    return c.num_hidden_layers * layer + head


def _with_mfu(measure: Measure, spec: str) -> Measure:
    import torch

    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    flops = measure.extra["tokens_per_second"] * 4 * _matmul_params(spec)
    measure.extra |= {"device": name, "mfu": flops / peak if peak else float("nan")}
    return Measure(measure.extra["tokens_per_second"], measure.losses, measure.extra)


def _ours(spec: str) -> Measure:
    extra = ["train.compile=true"] if "compile" in _switches() else []
    return _with_mfu(perf_steps.ours(spec, *extra), spec)


def _baseline(spec: str) -> Measure:
    on = _switches()
    options = {"padding_free": "packing" in on, "torch_compile": "compile" in on, "use_liger_kernel": "liger" in on}
    return _with_mfu(perf_steps.baseline_sft(spec, **options), spec)


for size, preset in MODELS.items():
    spec = f"gpu-{size}"
    perf_steps.SPECS[spec] = dict(
        model=[f"model.name={preset}", "model.init=random"], objective="sft", dataset="alpaca-demo", rows=176,
        max_length=1024, batch=8, steps=20, device="cuda", dtype="bfloat16",
    )  # fmt: skip
    register(
        Benchmark(
            spec,
            f"GPU SFT tokens/s, LoRA on random-init {preset} (bf16): oneml defaults vs plain TRL "
            "(peak memory and MFU in the extras)",
            ours=lambda s=spec: _ours(s),
            baseline=lambda s=spec: _baseline(s),
            metric="tokens/s",
            target=">= 1.0",
            passes=lambda r: r >= 1.0,
            same_loss=1e-2,  # bf16: the same computation agrees to about 1%
            needs=_no_gpu,
        )
    )
