"""Which GPU each process uses: one GPU for a one-process run, a free slot's GPU for each concurrent study trial.

Placement is decided from ``CUDA_VISIBLE_DEVICES`` as the parent process sees it (indices, GPU UUIDs or MIG ids,
in its order) and the device count, by pure functions, so that it is tested without a GPU; the thin wrappers at
the end read the environment and torch.

Why a one-process run narrows ``CUDA_VISIBLE_DEVICES`` to one GPU: with several GPUs visible and no distributed
launcher, transformers' Trainer counts them all (``args.n_gpu``) and wraps the model in ``nn.DataParallel``;
TRL's SFT and DPO trainers refuse that outright and ORPO would silently run DataParallel. The variable only
takes effect before CUDA starts in the process, so a run that finds CUDA already started with several GPUs
visible is refused with the fix in one line.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from oneml.errors import OnemlError

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
GPU_FRACTION_ENV = "ONEML_GPU_FRACTION"
"""Set on a study's worker processes under --gpu-fraction: the share of its GPU each trial may take."""
CONCURRENT_ENV = "ONEML_CONCURRENT_TRIALS"
"""Set on a study's worker processes: how many trials the executor runs at once (recorded with each run)."""
CONTEXT_RESERVE_BYTES = 1 << 30
"""Device memory a process uses outside PyTorch's caching allocator (the CUDA context, its kernels and module
images, library handles): `set_per_process_memory_fraction` caps only the allocator, so each trial's share is
lowered by this much. 1 GiB covers the ~0.5-0.7 GiB a CUDA 12/13 context takes on Hopper with lazy module loading
(tests/gpu measures it on the device)."""


def visible(env_value: str | None, count: int) -> list[str]:
    """The GPUs a process may use, as ``CUDA_VISIBLE_DEVICES`` entries: the parent's list when it set one (in its
    order), else ``0 .. count-1``. An empty value hides every GPU."""
    if env_value is None:
        return [str(i) for i in range(count)]
    return [entry.strip() for entry in env_value.split(",") if entry.strip()]


def one_process_pin(env_value: str | None, count: int, world_size: int, launched: bool) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` a one-process run should set (its first visible GPU), or None to leave it.

    ``count``: the GPUs the machine has (used when the variable is unset). None for a run over several processes
    (each rank binds its own device) or inside a launcher's process, and where at most one GPU is visible.
    """
    if world_size > 1 or launched:
        return None
    entries = visible(env_value, count)
    return entries[0] if len(entries) > 1 else None


@dataclass(frozen=True)
class TrialPlacement:
    """Where a study's concurrent trials run: ``devices[slot]`` is the ``CUDA_VISIBLE_DEVICES`` of the worker
    holding that slot (None: leave the parent's), ``fraction`` the share of that GPU's memory each trial may take."""

    devices: tuple[str | None, ...]
    fraction: float | None


def trial_placement(workers: int, fraction: float | None, gpus: list[str], uses_gpu: bool) -> TrialPlacement:
    """Spread ``workers`` concurrent trials over the visible ``gpus``, round-robin by worker slot.

    ``fraction`` (--gpu-fraction): each trial's share of one GPU, so ``floor(1 / fraction)`` trials fit on a GPU;
    without it every trial needs a GPU of its own. More workers than fit is refused in one line. Trials that do
    not use a GPU (``uses_gpu`` False, or no GPU visible) are left where they are.
    """
    if not uses_gpu or not gpus:
        return TrialPlacement(tuple([None] * workers), fraction)
    per_gpu = math.floor(1 / fraction + 1e-9) if fraction is not None else 1
    if workers > per_gpu * len(gpus):
        share = f"--gpu-fraction {fraction:g} fits {per_gpu} trial(s) on a GPU" if fraction else "one trial per GPU"
        need = math.ceil(workers / per_gpu)
        fix = "lower --workers or --gpu-fraction" if fraction else "lower --workers or set --gpu-fraction (e.g. 0.5)"
        raise OnemlError(
            f"executor: --workers {workers} needs {need} GPU(s) ({share}) but {len(gpus)} visible "
            f"({VISIBLE_ENV}={','.join(gpus)}); {fix}"
        )
    return TrialPlacement(tuple(gpus[slot % len(gpus)] for slot in range(workers)), fraction)


def allocator_fraction(share: float, total_bytes: int, reserve_bytes: int = CONTEXT_RESERVE_BYTES) -> float:
    """The fraction to give `torch.cuda.set_per_process_memory_fraction` so that allocator + context stay within
    ``share`` of the GPU; refused in one line when the share does not even hold the context."""
    fraction = share - reserve_bytes / total_bytes
    if fraction <= 0:
        raise OnemlError(
            f"executor: --gpu-fraction {share:g} of this GPU ({total_bytes / 2**30:.1f} GiB) leaves no memory "
            f"after the {reserve_bytes / 2**30:.1f} GiB each process's CUDA context takes; use a larger fraction"
        )
    return fraction


# --- the environment --------------------------------------------------------------------------------------------


def pin_one_process(world_size: int, launched: bool, device: str) -> None:
    """Narrow this process to its first visible GPU before CUDA starts (see the module docstring)."""
    if device == "cpu":
        return
    import torch

    env = os.environ.get(VISIBLE_ENV)
    # Before CUDA starts, torch counts devices through NVML, which does not start it (and honours the variable).
    count = torch.cuda.device_count() if env is None else 0
    pin = one_process_pin(env, count, world_size, launched)
    if pin is not None:
        os.environ[VISIBLE_ENV] = pin


def check_one_device(world_size: int, launched: bool, device: str) -> None:
    """Refuse a one-process CUDA run that still sees several GPUs (CUDA started before `pin_one_process`)."""
    import torch

    if world_size > 1 or launched or device != "cuda":
        return
    count = torch.cuda.device_count()
    if count > 1:
        raise OnemlError(
            f"train.device: {count} GPUs are visible to this one-process run and CUDA had started before oneml "
            f"could pick one; set {VISIBLE_ENV} to one GPU before starting Python (or run over several GPUs with "
            "distributed.launcher)"
        )


def visible_gpus() -> list[str]:
    """This process's visible GPUs (counted without starting CUDA where NVML answers)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return visible(os.environ.get(VISIBLE_ENV), torch.cuda.device_count())


def gpu_memory_bytes() -> int:
    """Total memory of this process's first visible GPU."""
    import torch

    return torch.cuda.get_device_properties(0).total_memory


def sharing_tags() -> dict[str, str]:
    """What a run records about the processes it shared its machine with: how many trials ran at once ('1' outside
    a study's workers) and, under --gpu-fraction, its share of the GPU."""
    from oneml.tracking import tags as tag

    out = {tag.CONCURRENT_TRIALS: os.environ.get(CONCURRENT_ENV, "1")}
    if os.environ.get(GPU_FRACTION_ENV):
        out[tag.GPU_FRACTION] = os.environ[GPU_FRACTION_ENV]
    return out
