"""Started by test_cuda_distributed.py under torchrun (one process on the one GPU): oneml's DDP or FSDP strategy
arguments, with the nccl backend, on a trainer built the way the runner builds it; writes what it set up as JSON.

oneml applies a strategy only when a run spans several processes; a machine with one GPU cannot run two nccl ranks
(NCCL refuses two ranks on one device), so this applies the strategy's Trainer arguments to a world of one."""

from __future__ import annotations

import json
import sys


def main(strategy: str, root: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    from oneml import load_run_config
    from oneml.distributed import strategies
    from oneml.methods import MethodContext
    from oneml.models import load_model_and_tokenizer
    from oneml.objectives import TrainerInputs
    from oneml.train.arguments import trainer_args

    cfg = load_run_config(
        None,
        [
            "model.name=tiny-llama", "method.r=4", "data.dataset=alpaca-demo", "data.max_samples=32",
            "data.eval_size=8", "data.max_length=96", "train.max_steps=3", "train.batch_size=4",
            "train.learning_rate=0.01", "train.warmup_ratio=0", "train.logging_steps=1", f"tracking.root={root}",
            f"distributed.strategy={strategy}",
        ],
    )  # fmt: skip
    model, tokenizer = load_model_and_tokenizer(cfg.model, device="cuda")
    data = cfg.objective.prepare(cfg.data, tokenizer)
    dtype = next(model.parameters()).dtype
    ctx = MethodContext(device="cuda", sharded=strategy == "fsdp", max_steps=cfg.train.max_steps)
    model = cfg.method.apply(model, ctx)
    args = trainer_args(cfg, "cuda", dtype, f"{root}/trainer")
    args |= strategies.STRATEGIES.get(strategy).trainer_args(cfg, "cuda")  # as for a run over several processes
    inputs = TrainerInputs(
        model=model, tokenizer=tokenizer, train_dataset=data.train, eval_dataset=data.eval, args=args,
        callbacks=[], optimizers=(None, None), max_length=cfg.data.max_length, speed=cfg.objective.speed(model, cfg),
    )  # fmt: skip
    trainer = cfg.objective.build_trainer(inputs)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    report = {
        "engine": str(trainer.accelerator.state.distributed_type.value),
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "losses": losses,
        "steps": trainer.state.global_step,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20,
    }
    with open(out, "w") as f:
        json.dump(report, f)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
