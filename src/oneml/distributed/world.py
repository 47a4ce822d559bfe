"""Where this process stands in a run spread over several processes (set by torchrun / accelerate launch).

Only rank 0 records to MLflow and publishes the run directory; every rank trains, evaluates (the
evaluation is gathered across ranks) and takes part in collective saves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

LAUNCHED_ENV = "ONEML_LAUNCHED"
"""Set by `oneml train --launcher ...` on the processes it starts, so that they train instead of launching again."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> World:
    """The process's rank and the world size, from the launcher's environment (one process when absent)."""
    env = os.environ
    size = int(env.get("WORLD_SIZE", "1"))
    return World(int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), size)


def joined(config) -> World:
    """This process's world, which must be the configured one: the run id and the effective batch depend on it."""
    from oneml.errors import OnemlError

    world = current()
    if world.size != config.distributed.world_size:
        raise OnemlError(
            f"distributed: WORLD_SIZE={world.size} from the launcher, but distributed.nproc x nnodes = "
            f"{config.distributed.world_size}; set them to match (or use oneml train --launcher)"
        )
    bind_device(world)
    return world


def batch_sizes(config) -> dict[str, float]:
    """Recorded with every run: per-device batch, accumulation, processes and the effective (global) batch."""
    t, size = config.train, config.distributed.world_size
    return {
        "world_size": float(size),
        "per_device_batch_size": float(t.batch_size),
        "grad_accum": float(t.grad_accum),
        "effective_batch_size": float(t.batch_size * t.grad_accum * size),
    }


def collective_save(config, trainer, path) -> bool:
    """Sharded weights (FSDP, ZeRO-3) are gathered by the Trainer on every rank and written by rank 0; returns
    False where each rank holds the whole model and the method's own save applies (one process, DDP)."""
    if config.distributed.world_size == 1 or config.distributed.strategy == "ddp":
        return False
    trainer.save_model(str(path))
    return True


_ENGINES = {"fsdp": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}


def engine_tags(config, trainer) -> dict[str, str]:
    """What accelerate actually set up (NO, MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED), checked against what was asked:
    a sharding strategy that silently fell back to DDP would record a false run."""
    state = trainer.accelerator.state
    engine = str(state.distributed_type.value)
    expected = _ENGINES.get(config.distributed.strategy) if config.distributed.world_size > 1 else None
    if expected is not None and engine != expected:
        from oneml.errors import OnemlError

        raise OnemlError(f"distributed.strategy: {config.distributed.strategy} asked, but accelerate set up {engine}")
    tags = {"oneml.engine": engine}
    plugin = getattr(state, "fsdp_plugin", None)
    if plugin is not None:
        tags["oneml.engine.fsdp_version"] = str(plugin.fsdp_version)
    if getattr(state, "oneml_cpu_fsdp", False):
        tags["oneml.engine.cpu_fsdp"] = "true"  # FSDP on CPU processes through cpu_fsdp.py
    return tags


def launched() -> bool:
    """Started by a launcher (ours, or torchrun / accelerate run by hand): train here, do not launch again."""
    return os.environ.get(LAUNCHED_ENV) == "1" or "LOCAL_RANK" in os.environ


def bind_device(world: World) -> None:
    """Each rank on its own GPU: models load on the current CUDA device, which defaults to GPU 0 for all."""
    import torch

    if world.size > 1 and torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())


def finish() -> None:
    """Leave the process group cleanly (torch warns about, and may hang on, a group left open at exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class SilentRecorder:
    """What ranks other than 0 record: nothing (one run has one MLflow record, written by rank 0)."""

    run_id = None

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None
