"""What a run hands the engines: the Trainer's arguments from our config, the speed switches recorded with the
run, and the progress bar while it trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oneml.config import RunConfig
from oneml.distributed import strategies
from oneml.tracking import tags as tag


def trainer_args(config: RunConfig, device: str, dtype, output_dir: Path) -> dict[str, Any]:
    import torch

    t = config.train
    # Two kept checkpoints: a kill during a save leaves the previous one complete.
    saving = dict(save_steps=t.save_steps, save_total_limit=2) if t.save_steps else {}
    args = saving | dict(
        output_dir=str(output_dir),
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=round(t.warmup_ratio * t.max_steps),
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy="no",  # the objective's own evaluation runs instead (token-weighted, comparable)
        include_num_input_tokens_seen="non_padding",
        save_strategy="steps" if t.save_steps else "no",
        seed=t.seed,
        data_seed=t.seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=device == "cpu",
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        dataloader_num_workers=0,
        # TRL turns checkpointing on by default (and bf16); both are set explicitly so our config decides.
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        torch_compile=t.compile is True,  # regional compilation is ours (train/speedups.py), not the Trainer's
        # Always explicit: left unset, transformers turns TF32 on by itself whenever torch_compile is on with bf16.
        tf32=t.tf32,
        # Loss over the label tokens of the whole global batch, whatever the process count (strategies.py).
        average_tokens_across_devices=True,
    )
    if t.optim != "auto":
        from oneml.train.speedups import OPTIMIZERS

        args["optim"] = OPTIMIZERS.get(t.optim).trainer_name
    return args | strategies.trainer_args(config, device)


def switches(config: RunConfig, dtype, speed, optimizer: str) -> dict[str, str]:
    """Every speed switch, recorded so that comparisons between runs are honest (``speed``: what the objective
    resolved for this model, with the reason for any requested switch left off; ``optimizer``: the one in use)."""
    t = config.train
    return {
        f"{tag.SWITCH_PREFIX}dtype": str(dtype).replace("torch.", ""),
        f"{tag.SWITCH_PREFIX}gradient_checkpointing": str(t.gradient_checkpointing).lower(),
        f"{tag.SWITCH_PREFIX}compile": str(t.compile).lower(),
        f"{tag.SWITCH_PREFIX}kernels": t.kernels,
        f"{tag.SWITCH_PREFIX}optim": optimizer,
        f"{tag.SWITCH_PREFIX}tf32": str(t.tf32).lower(),
    } | speed.tags()


def precision_recipe(trainer) -> str:
    """How the trained weights are kept and computed in, read off the built trainer (TRL may recast adapters):
    fp32; bf16-mixed / fp16-mixed (float32 trainable weights, the forward under half-precision autocast: the
    master-weights recipe); bf16 / fp16 (half-precision trainable weights: no float32 master copy); or
    mixed(<dtypes>) when the trainable weights differ in dtype."""
    import torch

    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    trained = {p.dtype for p in trainer.model.parameters() if p.requires_grad}
    autocast = "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else None
    if len(trained) != 1:
        return "mixed(" + ",".join(sorted(names.get(d, str(d)) for d in trained)) + ")"
    weights = names.get(trained.pop(), "other")
    if autocast is not None and weights == "fp32":
        return f"{autocast}-mixed"
    return weights
