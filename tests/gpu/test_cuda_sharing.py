"""Sharing and running out of a GPU: a real CUDA out-of-memory error becomes one actionable line and a FAILED record,
and leaves the GPU usable; two study trials share one GPU under --gpu-fraction 0.5; the memory reserved for each
process's CUDA context covers what the context really takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from gpukit import GPU, free_cuda, tiny
from transformers import TrainerCallback

from oneml import OnemlError, load_run_config, train
from oneml.distributed.devices import CONTEXT_RESERVE_BYTES
from oneml.tracking import list_runs

pytestmark = GPU


class CapMemory(TrainerCallback):
    """When training starts, cap the caching allocator just above what it holds: the first step's activations
    cannot fit, and the allocator raises a real torch.OutOfMemoryError."""

    def on_train_begin(self, args, state, control, **kwargs):
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + 8 * 2**20) / total)


def test_a_real_cuda_out_of_memory_is_one_line_a_failed_record_and_a_usable_gpu(tmp_path):
    free_cuda()
    before = torch.cuda.memory_allocated()
    wide = "model.overrides={hidden_size: 512, intermediate_size: 2048, num_attention_heads: 8, num_key_value_heads: 8}"
    cfg = load_run_config(None, tiny(tmp_path, wide, "train.batch_size=16", "data.max_length=512"))
    try:
        with pytest.raises(OnemlError) as info:
            train(cfg, progress=False, callbacks=[CapMemory()])
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    message = str(info.value)
    del info  # its traceback holds the run's frames
    assert message.startswith("out of memory at step 1; try ") and "train.batch_size=8" in message
    assert len(message.splitlines()) == 1
    (run,) = list_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert run["status"] == "FAILED" and "out of memory" in run["tags"]["oneml.failure"]
    free_cuda()
    assert torch.cuda.memory_allocated() - before < 64 * 2**20  # the failed run's tensors are gone
    again = train(load_run_config(None, tiny(tmp_path / "again", "train.max_steps=1")), progress=False)
    assert again.metrics["steps"] == 1.0


def test_two_trials_share_one_gpu_under_gpu_fraction(tmp_path):
    """`oneml study run --workers 2 --gpu-fraction 0.5`: both workers on the one GPU at once, each capped at half
    of it less its context; every run finishes and records that it ran beside another."""
    import yaml

    spec = yaml.safe_load((_root() / "configs" / "studies" / "tiny.yaml").read_text())
    spec["base"]["tracking"] = {"root": str(tmp_path / "root")}
    spec["seeds"] = [0]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "oneml", "study", "run", str(path), "--workers", "2", "--gpu-fraction", "0.5", "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/root/mlflow.db")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    runs = [r for r in runs if "oneml.run_id" in r.data.tags and r.data.tags.get("oneml.study_parent") != "true"]
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert run.data.tags["oneml.device"] == "cuda" and run.data.tags["oneml.concurrent_trials"] == "2"
        assert run.data.tags["oneml.gpu_fraction"] == "0.5"
    spans = sorted((r.info.start_time, r.info.end_time) for r in runs)
    assert any(b_start < a_end for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))  # at once


def test_the_context_reserve_covers_a_cuda_context():
    """Measured in a fresh process through NVML (which sees memory outside PyTorch's allocator): the device memory
    a process takes beyond its allocator's reservation, after cuBLAS is loaded, fits in CONTEXT_RESERVE_BYTES."""
    pytest.importorskip("pynvml")
    script = textwrap.dedent(
        """
        import json, os, sys, pynvml, torch
        pynvml.nvmlInit()
        index = int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or 0)
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        used = lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used
        start = used()
        x = torch.randn(1024, 1024, device="cuda")
        (x @ x).sum().item()
        torch.cuda.synchronize()
        print(json.dumps({"outside_allocator": used() - start - torch.cuda.memory_reserved()}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=os.environ)
    assert proc.returncode == 0, proc.stderr[-2000:]
    taken = json.loads(proc.stdout.strip().splitlines()[-1])["outside_allocator"]
    print(f"CUDA context and libraries: {taken / 2**20:.0f} MiB (reserve {CONTEXT_RESERVE_BYTES / 2**20:.0f} MiB)")
    assert 0 < taken <= CONTEXT_RESERVE_BYTES


def _root():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]
