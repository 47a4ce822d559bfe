"""Inference cost of the trained model: latency per generated token and memory, adapter unmerged vs merged.

An unmerged LoRA adds two small matmuls per adapted layer to every token; merging folds them into the base
weights (same logits, base-model speed). This measures both on the same prompt:

    ms_per_token = (t(prompt + N new tokens) - t(prompt + 1 new token)) / (N - 1)

(greedy, EOS ignored so every run generates exactly N tokens; the median of ``repeats`` timings), which
separates decoding from the prompt's prefill. Memory: the weights' bytes and the KV cache of the prompt plus
the new tokens (both exact), and the peak during generation above the level before it (CUDA: the allocator's
peak; CPU: the sampled resident set, which the allocator's reuse of freed memory keeps small).
Methods that cannot merge (prefix, bottleneck) report the unmerged figures only. Runs last, because merging
changes the model in place.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import torch

from oneml.eval.benchmarks import BENCHMARKS, Benchmark, BenchResult, EvalContext, EvalOptions

NEW_TOKENS = 32
REPEATS = 3
PROMPT = "Explain in a few sentences why the sky is blue."


class InferenceCost(Benchmark):
    name = "inference"
    last = True
    """Run after every other benchmark: it merges the adapter in place."""

    def load(self, options: EvalOptions, config: Any) -> dict[str, Any]:
        return {"new_tokens": options.max_new_tokens or NEW_TOKENS}

    def total(self, items: Any) -> int:
        return 2

    def score(self, ctx: EvalContext, items: dict[str, Any]) -> BenchResult:
        n = max(2, items["new_tokens"])
        prompt = ctx.chat([{"role": "user", "content": PROMPT}])
        enc = ctx.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(_device(ctx.model))
        costs = {f"inference_{k}": v for k, v in measure(ctx.model, ctx.tokenizer, enc, n).items()}
        ctx.advance(1)
        merged_note = "merged"
        if ctx.method.mergeable and ctx.method.is_adapter:
            merged = ctx.method.merge(ctx.model)
            costs |= {f"inference_merged_{k}": v for k, v in measure(merged, ctx.tokenizer, enc, n).items()}
            ctx.model = merged
        else:
            merged_note = (
                f"{ctx.method.name} is not merged ({'full weights' if not ctx.method.is_adapter else 'not mergeable'})"
            )
        ctx.advance(1)
        return BenchResult(metrics={}, costs=costs, details={"new_tokens": n, "prompt": PROMPT, "merged": merged_note})


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def measure(model: Any, tokenizer: Any, enc: Any, new_tokens: int) -> dict[str, float]:
    def run(k: int) -> float:
        start = time.perf_counter()
        model.generate(**enc, max_new_tokens=k, min_new_tokens=k, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        if enc["input_ids"].is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    with torch.no_grad():
        run(2)  # warm-up: first calls allocate caches and pick kernels
        with _PeakMemory(enc["input_ids"].device) as peak:
            full = [run(new_tokens) for _ in range(REPEATS)]
        one = [run(1) for _ in range(REPEATS)]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    tokens = enc["input_ids"].shape[1] + new_tokens
    return {
        "ms_per_token": 1000 * (statistics.median(full) - statistics.median(one)) / (new_tokens - 1),
        "weights_mib": weights / 2**20,
        "peak_mib": peak.mib,
        "kv_cache_mib": kv_cache_bytes(model.config, tokens, next(model.parameters()).element_size()) / 2**20,
    }


def kv_cache_bytes(config: Any, tokens: int, element_size: int) -> float:
    """Keys and values of every layer for ``tokens`` positions: 2 * layers * kv_heads * head_dim * tokens."""
    heads = getattr(config, "num_attention_heads", 1)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * tokens * element_size


class _PeakMemory:
    """Peak memory while the block runs, above the level at its start."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.mib = 0.0

    def __enter__(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        import psutil

        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.top = self.base
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.done.wait(0.005):
            self.top = max(self.top, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        if self.cuda:
            self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            self.done.set()
            self.thread.join()
            self.mib = (max(self.top, self.proc.memory_info().rss) - self.base) / 2**20
        return False


BENCHMARKS.register("inference", InferenceCost, "Latency per generated token and memory, adapter unmerged vs merged")
