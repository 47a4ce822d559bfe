"""How one run is spread over processes: DDP, FSDP or DeepSpeed ZeRO, as Trainer arguments built from our config.

The strategy travels in the transformers ``TrainingArguments`` (``ddp_backend``, ``fsdp``/``fsdp_config``,
``deepspeed``), from which transformers builds accelerate's DDP, FSDP or DeepSpeed plugin. The launcher
(`accelerate launch` or torchrun) only starts the processes, so both launchers run the same strategy code.

Loss normalisation: transformers counts the label tokens of every micro-batch of an optimizer step and sums
the count over ranks (``average_tokens_across_devices``); each rank divides its summed token loss by that global
count and multiplies by the world size, which DDP's gradient mean divides out again, so the gradient is that of

    L = (1 / N_global) * sum over ranks, micro-batches and label tokens of -log p(token)

whatever the process count and the gradient accumulation (transformers issue #34242).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oneml.errors import OnemlError
from oneml.registry import Registry

if TYPE_CHECKING:
    from oneml.config import RunConfig


@dataclass(frozen=True)
class Strategy:
    trainer_args: Callable[[RunConfig, str], dict[str, Any]]
    """(config, device) -> extra TrainingArguments for every rank."""
    check: Callable[[RunConfig, str], None]
    """(config, device) -> None, or one-line OnemlError when this strategy cannot run that config here."""
    prepare: Callable[[RunConfig, str], None] = lambda config, device: None
    """(config, device) -> None: set-up in every rank process before the Trainer is built."""


STRATEGIES: Registry[Strategy] = Registry("strategy")


def backend(config: RunConfig, device: str) -> str:
    chosen = config.distributed.backend
    return ("nccl" if device == "cuda" else "gloo") if chosen == "auto" else chosen


def _ddp_args(config: RunConfig, device: str) -> dict[str, Any]:
    # ddp_find_unused_parameters stays transformers' choice: some methods leave trainable parameters out of a
    # step (prefix tuning without its prompt, AdaLoRA's pruned ranks), which DDP must be told to expect.
    return {"ddp_backend": backend(config, device)}


def fsdp_config(config: RunConfig) -> dict[str, Any]:
    """FSDP2 settings (transformers' ``fsdp_config`` keys); the decoder layers are the sharding units."""
    return {
        "version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # the model's _no_split_modules (its decoder layer class)
        "reshard_after_forward": True,
        "state_dict_type": "FULL_STATE_DICT",  # the saved adapter is one ordinary file, as without FSDP
        # FSDP's own checkpointing avoids the extra all-gather the Trainer's gradient checkpointing would add.
        "activation_checkpointing": config.train.gradient_checkpointing,
        "cpu_ram_efficient_loading": False,
    }


def _fsdp_args(config: RunConfig, device: str) -> dict[str, Any]:
    return _ddp_args(config, device) | {
        "fsdp": True,
        "fsdp_config": fsdp_config(config),
        "activation_checkpointing": False,
    }


def _check_fsdp(config: RunConfig, device: str) -> None:
    reason = config.method.sharding_refusal()
    if reason:
        raise OnemlError(f"distributed.strategy: fsdp cannot {reason}")


def _prepare_fsdp(config: RunConfig, device: str) -> None:
    if device == "cpu":
        from oneml.distributed import cpu_fsdp

        cpu_fsdp.enable()  # accelerate would silently run DDP on CPU processes (cpu_fsdp.py)


def deepspeed_config(config: RunConfig, stage: int) -> dict[str, Any]:
    """The DeepSpeed JSON for ZeRO stage 2 or 3; "auto" values are filled by transformers from the same config."""
    t, d = config.train, config.distributed
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        # Without it a ZeRO-3 save writes empty placeholders instead of the (sharded) weights.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "train_batch_size": t.batch_size * t.grad_accum * d.world_size,
        "gradient_clipping": t.max_grad_norm,
        "bf16": {"enabled": "auto"},  # follows model.dtype via the Trainer's bf16/fp16 flags
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # the optimizer is oneml's AdamW (LoRA+ groups), not DeepSpeed's
        "steps_per_print": t.logging_steps,
        "wall_clock_breakdown": False,
    }


def _zero(stage: int) -> Strategy:
    def args(config: RunConfig, device: str) -> dict[str, Any]:
        return {"deepspeed": deepspeed_config(config, stage)}

    def check(config: RunConfig, device: str) -> None:
        name = config.distributed.strategy
        if importlib.util.find_spec("deepspeed") is None:
            raise OnemlError(
                f"distributed.strategy: {name} needs the deepspeed package, which is not installed "
                "(pip install deepspeed); `oneml train ... --dry-run` writes the DeepSpeed JSON it would use"
            )
        if device != "cuda":
            raise OnemlError(f"distributed.strategy: {name} (DeepSpeed ZeRO) needs CUDA devices; use ddp or fsdp")

    return Strategy(args, check)


def _no_check(config: RunConfig, device: str) -> None:
    return None


STRATEGIES.register("ddp", Strategy(_ddp_args, _no_check), "data parallel: a full model copy per process")
STRATEGIES.register(
    "fsdp", Strategy(_fsdp_args, _check_fsdp, _prepare_fsdp), "FSDP2: parameters, gradients, optimizer sharded"
)
STRATEGIES.register("zero2", _zero(2), "DeepSpeed ZeRO stage 2: optimizer state and gradients sharded")
STRATEGIES.register("zero3", _zero(3), "DeepSpeed ZeRO stage 3: parameters sharded too")


def check(config: RunConfig, device: str) -> None:
    """Everything that stops a multi-process run, found before any process starts."""
    d = config.distributed
    if d.world_size == 1:
        return
    if not config.objective.gathers_eval:
        from oneml.objectives import OBJECTIVES

        able = " or ".join(e.name for e in OBJECTIVES.entries() if e.value.gathers_eval)
        raise OnemlError(
            f"distributed: runs over several processes support the {able} objective; {config.objective.name}'s "
            "evaluation is not gathered across processes yet"
        )
    if d.backend == "nccl" and device != "cuda":
        raise OnemlError("distributed.backend: nccl needs CUDA devices; use gloo (or auto) on CPU")
    reason = config.method.multiprocess_refusal(d.strategy)
    if reason:
        raise OnemlError(f"distributed.strategy: {reason}")
    STRATEGIES.get(d.strategy).check(config, device)


def shards_parameters(config: RunConfig) -> bool:
    """True where each process holds only a shard of the parameters, which FSDP converts as it loads them."""
    return config.distributed.world_size > 1 and config.distributed.strategy == "fsdp"


def prepare(config: RunConfig, device: str) -> None:
    """The strategy's set-up in this rank process (none for a single process)."""
    if config.distributed.world_size > 1:
        STRATEGIES.get(config.distributed.strategy).prepare(config, device)


def trainer_args(config: RunConfig, device: str) -> dict[str, Any]:
    """Extra TrainingArguments of this run (none for a single process)."""
    if config.distributed.world_size == 1:
        return {}
    return STRATEGIES.get(config.distributed.strategy).trainer_args(config, device)
