"""Distributed settings, generated launcher / DeepSpeed / FSDP configs and refusals (no processes started)."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml
from distkit import write_config

from clikit import run_cli
from oneml.config import load_run_config
from oneml.distributed import launch, strategies, world
from oneml.errors import OnemlError

TORCHRUN = ["distributed.launcher=torchrun"]


def test_one_process_keeps_its_run_id_and_rendezvous_does_not_count():
    plain = load_run_config(None, [])
    assert load_run_config(None, TORCHRUN).run_id == plain.run_id  # one process is one process
    two = load_run_config(None, TORCHRUN + ["distributed.nproc=2"])
    assert two.run_id != plain.run_id  # another effective batch: another experiment
    moved = load_run_config(None, TORCHRUN + ["distributed.nproc=2", "distributed.master_port=40000"])
    assert moved.run_id == two.run_id
    assert load_run_config(None, TORCHRUN + ["distributed.nproc=2", "distributed.strategy=fsdp"]).run_id != two.run_id


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["distributed.nproc=2"], r"^distributed: nproc/nnodes above 1 need a launcher"),
        (["distributed.launcher=mpi"], r"^distributed.launcher: must be one of"),
        (
            ["distributed.strategy=zero1"],
            r"^distributed.strategy: must be one of 'ddp', 'fsdp', 'zero2' or 'zero3', got",
        ),
        (TORCHRUN + ["distributed.nnodes=2", "distributed.node_rank=2"], r"node_rank must be below nnodes \(2\)"),
    ],
)
def test_bad_settings_are_one_line_naming_the_field(overrides, message):
    with pytest.raises(OnemlError, match=message) as info:
        load_run_config(None, overrides)
    assert "\n" not in str(info.value)


def test_deepspeed_json_follows_the_config():
    cfg = load_run_config(
        None,
        TORCHRUN + ["distributed.nproc=2", "distributed.nnodes=2", "distributed.strategy=zero3"]
        + ["train.batch_size=3", "train.grad_accum=5", "train.max_grad_norm=0.5", "train.logging_steps=7"],
    )  # fmt: skip
    ds = strategies.deepspeed_config(cfg, 3)
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 5
    assert ds["train_batch_size"] == 3 * 5 * 4  # DeepSpeed checks micro x accum x world == global
    assert ds["gradient_clipping"] == 0.5 and ds["steps_per_print"] == 7
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert "stage3_gather_16bit_weights_on_model_save" not in strategies.deepspeed_config(cfg, 2)["zero_optimization"]
    assert strategies.trainer_args(cfg, "cuda") == {"deepspeed": ds}


def test_dry_run_writes_the_configs_and_prints_the_launch(tmp_path, capsys):
    cfg = write_config(tmp_path, tracking={"root": str(tmp_path / "root")})
    code, out, err = run_cli(
        capsys, "train", str(cfg), "--launcher", "torchrun", "--nproc", "2", "--nnodes", "2", "--node-rank", "1",
        "--master-addr", "10.0.0.1", "--strategy", "zero2", "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    assert "note: distributed.strategy: zero2 needs the deepspeed package" in err  # a dry run still shows the plan
    cmd = shlex.split(out.strip())
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node"] and cmd[4] == "2"
    for flag, value in (("--nnodes", "2"), ("--node-rank", "1"), ("--master-addr", "10.0.0.1")):
        assert cmd[cmd.index(flag) + 1] == value
    assert cmd[-4:-1] == ["-m", "oneml", "train"]
    written = load_run_config(cmd[-1])  # every process reads this: same config, same run id
    assert (
        written.run_id
        == load_run_config(
            cfg, TORCHRUN + ["distributed.nproc=2", "distributed.nnodes=2", "distributed.strategy=zero2"]
        ).run_id
    )
    ds = json.loads((tmp_path / "root" / "launch" / written.run_id / "deepspeed.json").read_text())
    assert ds["zero_optimization"]["stage"] == 2 and ds["train_batch_size"] == 4 * 4


def test_accelerate_config_describes_the_processes(tmp_path, capsys):
    cfg = write_config(tmp_path, tracking={"root": str(tmp_path / "root")})
    code, out, err = run_cli(capsys, "train", str(cfg), "--launcher", "accelerate", "--nproc", "2", "--dry-run")
    assert code == 0, err
    cmd = shlex.split(out.strip())
    acc = yaml.safe_load(open(cmd[cmd.index("--config_file") + 1]).read())
    assert (acc["num_processes"], acc["num_machines"], acc["distributed_type"]) == (2, 1, "MULTI_GPU")
    assert cmd[cmd.index("--module") + 1 :][:2] == ["oneml", "train"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strategy", "zero3"], "zero3 needs the deepspeed package"),
        (["--set", "objective=dpo", "--set", "data.dataset=dpo-demo"], "support the sft objective"),
    ],
)
def test_runs_that_cannot_run_here_fail_before_any_process_starts(tmp_path, capsys, extra, message):
    cfg = write_config(tmp_path, tracking={"root": str(tmp_path / "root")})
    code, _, err = run_cli(capsys, "train", str(cfg), "--launcher", "torchrun", "--nproc", "2", *extra)
    assert code == 2 and message in err
    assert not (tmp_path / "root" / "launch").exists()  # nothing written, nothing started


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"name": "qlora", "quantize": "int8"}, "cannot shard method qlora's 8-bit base"),
        ({"name": "dora", "quantize": "nf4"}, "DoRA's magnitudes in float32"),
        ({"name": "lora", "init": "pissa"}, "needs its own save step"),
        ({"name": "bottleneck"}, "needs its own save step"),
        ({"name": "lora", "loraplus_ratio": 16}, "parameter groups \\(LoRA\\+ learning rates\\)"),
    ],
)
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_fsdp_refuses_what_it_cannot_shard_or_save(method, message, device):
    cfg = load_run_config(None, TORCHRUN + ["distributed.nproc=2", "distributed.strategy=fsdp"] +
                          [f"method={json.dumps(method)}"])  # fmt: skip
    with pytest.raises(OnemlError, match=message):
        strategies.check(cfg, device)  # the GPU-side rules too, checked here without a GPU


@pytest.mark.parametrize(("device", "backend"), [("cuda", "nccl"), ("cpu", "gloo")])
def test_fsdp_args_for_lora_and_4bit_qlora(device, backend):
    strategies.check(load_run_config(None, TORCHRUN + ["distributed.nproc=2", "distributed.strategy=fsdp",
                                                       "method.name=qlora"]), device)  # fmt: skip
    cfg = load_run_config(None, TORCHRUN + ["distributed.nproc=2", "distributed.strategy=fsdp"])
    strategies.check(cfg, device)
    args = strategies.trainer_args(cfg, device)
    assert args["fsdp"] is True and args["fsdp_config"]["version"] == 2 and args["ddp_backend"] == backend
    assert args["activation_checkpointing"] is False  # FSDP's own checkpointing instead (fsdp_config)


def test_a_process_in_another_world_than_configured_refuses(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(OnemlError, match=r"WORLD_SIZE=3 from the launcher, but distributed.nproc x nnodes = 2"):
        world.joined(load_run_config(None, TORCHRUN + ["distributed.nproc=2"]))


def test_launchers_are_a_registry_matching_the_config_choices():
    from oneml.config import DistributedConfig

    allowed = DistributedConfig.model_fields["launcher"].annotation.__args__
    assert set(launch.LAUNCHERS.names()) == set(allowed) - {"none"}


def test_a_process_started_by_a_launcher_by_hand_trains_instead_of_launching_again(monkeypatch):
    monkeypatch.delenv(world.LAUNCHED_ENV, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert not world.launched()
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun / accelerate launch set it on every process
    assert world.launched()


def test_a_strategy_that_fell_back_is_an_error_not_a_false_record():
    """Where accelerate drops FSDP (MULTI_CPU without cpu_fsdp.py) the run must fail rather than be recorded as
    FSDP."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    def trainer(kind):
        return SimpleNamespace(accelerator=SimpleNamespace(state=SimpleNamespace(distributed_type=kind)))

    fsdp = load_run_config(None, TORCHRUN + ["distributed.nproc=2", "distributed.strategy=fsdp"])
    with pytest.raises(OnemlError, match="fsdp asked, but accelerate set up MULTI_CPU"):
        world.engine_tags(fsdp, trainer(DistributedType.MULTI_CPU))
    assert world.engine_tags(fsdp, trainer(DistributedType.FSDP))["oneml.engine"] == "FSDP"
    ddp = load_run_config(None, TORCHRUN + ["distributed.nproc=2"])
    assert world.engine_tags(ddp, trainer(DistributedType.MULTI_CPU)) == {"oneml.engine": "MULTI_CPU"}
