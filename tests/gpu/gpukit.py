"""What the GPU tests share. They run where CUDA is (the GPU check, benchmarks/gpu_check.sh) and skip cleanly
elsewhere; each holds CUDA to tolerances for the dtype it computes in (bfloat16 agrees to about 1e-2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
"""``pytestmark = GPU`` in every module here."""

BF16 = dict(rtol=2e-2, atol=2e-2)
"""Two bfloat16 computations of the same thing in another order: 8 bits of mantissa, a few roundings apart."""
FP32 = dict(rtol=2e-3, atol=1e-4)
"""float32 on the GPU: loose enough for TF32 matmuls (10-bit inputs), which a speed switch may turn on."""


def tiny(root: Path, *extra: str) -> list[str]:
    """A tiny-llama run on CUDA: 4 steps of 4 rows, no save by default."""
    return [
        "model.name=tiny-llama",
        "train.device=cuda",
        "data.dataset=alpaca-demo",
        "data.max_samples=32",
        "data.eval_size=8",
        "data.max_length=128",
        "train.max_steps=4",
        "train.batch_size=4",
        "train.learning_rate=0.01",
        "train.warmup_ratio=0",
        "train.logging_steps=1",
        f"tracking.root={root}",
        *extra,
    ]


def run_tags(result) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    return MlflowClient(result.tracking_uri).get_run(result.mlflow_run_id).data.tags


def free_cuda() -> None:
    import gc

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
