"""`oneml train --launcher accelerate|torchrun`: write the resolved config and the launcher's own config into
<root>/launch/<run id>/, then start `python -m oneml train <that config>` under the launcher on every process.

The processes read the same resolved config, so they compute the same run id; the launcher sets RANK,
LOCAL_RANK and WORLD_SIZE and we set ONEML_LAUNCHED so that they train instead of launching again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from oneml.config import RunConfig
from oneml.distributed.strategies import STRATEGIES, deepspeed_config, fsdp_config
from oneml.distributed.world import LAUNCHED_ENV
from oneml.errors import OnemlError
from oneml.registry import Registry


@dataclass
class Launch:
    command: list[str]
    env: dict[str, str]
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    """Generated files by role: config (the resolved run config), accelerate, deepspeed, fsdp."""


Builder = Callable[[RunConfig, Path, list[str]], list[str]]
LAUNCHERS: Registry[Builder] = Registry("launcher")


def _torchrun(config: RunConfig, folder: Path, train_cmd: list[str]) -> list[str]:
    d = config.distributed
    rendezvous = ["--nnodes", str(d.nnodes), "--node-rank", str(d.node_rank)]
    rendezvous += ["--master-addr", d.master_addr, "--master-port", str(d.master_port)]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(d.nproc), *rendezvous, *train_cmd]


def accelerate_config(config: RunConfig) -> dict:
    """`accelerate launch` config: the process topology only (the strategy is in the Trainer arguments, see
    strategies.py). MULTI_GPU selects accelerate's torch-elastic launcher, which also starts CPU processes
    (they join a gloo group); its MULTI_CPU launcher would need mpirun and a hostfile."""
    d = config.distributed
    return {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU",
        "num_processes": d.world_size,  # accelerate counts processes over all machines
        "num_machines": d.nnodes,
        "machine_rank": d.node_rank,
        "main_process_ip": d.master_addr,
        "main_process_port": d.master_port,
        "mixed_precision": "no",  # the Trainer's bf16/fp16 flags decide, from model.dtype
        "dynamo_config": {},
        "gpu_ids": "all",
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
        "debug": False,
    }


def _accelerate(config: RunConfig, folder: Path, train_cmd: list[str]) -> list[str]:
    path = folder / "accelerate.yaml"
    path.write_text(yaml.safe_dump(accelerate_config(config), sort_keys=False))
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path), *train_cmd]


LAUNCHERS.register("torchrun", _torchrun, "torch.distributed.run (torchrun): one process per device or core share")
LAUNCHERS.register("accelerate", _accelerate, "accelerate launch with a generated config file")


def prepare(config: RunConfig, quiet: bool = False) -> Launch:
    """Write the resolved config and the launcher's files; return the command that starts every process."""
    if config.distributed.launcher == "none":
        raise OnemlError("distributed.launcher: none starts no processes; use accelerate or torchrun")
    folder = Path(config.tracking.root).resolve() / "launch" / config.run_id
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OnemlError(f"tracking.root: cannot write to {folder}: {err.strerror or err}") from None
    files = {"config": folder / "config.yaml"}
    files["config"].write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    strategy = config.distributed.strategy
    if strategy.startswith("zero"):
        files["deepspeed"] = folder / "deepspeed.json"
        files["deepspeed"].write_text(json.dumps(deepspeed_config(config, int(strategy[-1])), indent=2))
    if strategy == "fsdp":
        files["fsdp"] = folder / "fsdp.json"
        files["fsdp"].write_text(json.dumps(fsdp_config(config), indent=2))
    train_cmd = ["-m", "oneml", "train", str(files["config"])] + (["--quiet"] if quiet else [])
    if config.distributed.launcher == "accelerate":
        train_cmd = ["--module", *train_cmd[1:]]
        files["accelerate"] = folder / "accelerate.yaml"
    command = LAUNCHERS.get(config.distributed.launcher)(config, folder, train_cmd)
    return Launch(command, _env(config), folder, files)


def _env(config: RunConfig) -> dict[str, str]:
    env = dict(os.environ) | {LAUNCHED_ENV: "1"}
    # CPU processes share the cores: one thread pool per process over all cores would thrash.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // config.distributed.nproc)))
    return env


def run(launch: Launch) -> int:
    """Start the launcher and wait; its exit code is the run's (any failed rank fails the run)."""
    return subprocess.call(launch.command, env=launch.env)


__all__ = ["LAUNCHERS", "STRATEGIES", "Launch", "accelerate_config", "prepare", "run"]
