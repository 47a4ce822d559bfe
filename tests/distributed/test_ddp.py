"""One run over two CPU processes (gloo) against the same run in one process with the same global batch.

Tolerance: both runs see the same examples at every step (accelerate shards each global batch across the
ranks in order) and normalise by the same global label-token count, so they differ only in the order of
float32 sums (across ranks and micro-batches). With ~1e3 tokens per step that order moves a loss by at most
~1e3 x 1.2e-7 relative; 1e-4 is well above it and far below a real normalisation error (a mean over ranks of
per-rank means, or the loss divided by grad_accum twice, changes the loss curve by percents).
"""

from __future__ import annotations

import json

import pytest
import torch
from distkit import free_port, oneml, write_config

from oneml.tracking import list_runs, resolve_tracking_uri

REL = 1e-4

pytestmark = pytest.mark.slow


def _run(tmp_path, name: str, *extra: str, **train):
    root = tmp_path / name
    cfg = write_config(tmp_path / f"{name}-cfg", train=train, tracking={"root": str(root)})
    proc = oneml("train", str(cfg), "--quiet", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = list_runs(resolve_tracking_uri(None, root))  # one MLflow run, written by rank 0 only
    (run_dir,) = (root / "runs").iterdir()  # one published run directory, no rank's staging left over
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return run, metrics, _curve(root, run["mlflow_run_id"]), proc


def _curve(root, mlflow_run_id: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    history = MlflowClient(resolve_tracking_uri(None, root)).get_metric_history(mlflow_run_id, "train_loss")
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    _, one, one_curve, _ = _run(tmp_path, "one", batch_size=4)
    port = str(free_port())
    # 2 processes x 1 example x 2 accumulation steps = 4 examples per optimizer step, as above.
    run, two, two_curve, proc = _run(
        tmp_path, "two", "--launcher", "torchrun", "--nproc", "2", "--master-port", port, batch_size=1, grad_accum=2
    )
    assert len(one_curve) == len(two_curve) == 6
    assert two_curve == pytest.approx(one_curve, rel=REL)
    for key in ("eval_loss", "eval_token_accuracy", "eval_tokens", "initial_eval_loss", "train_tokens"):
        assert two[key] == pytest.approx(one[key], rel=REL), key
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["effective_batch_size"] == one["effective_batch_size"] == 4
    assert (two["per_device_batch_size"], two["grad_accum"]) == (1, 2)
    tags = run["tags"]
    assert (tags["oneml.world_size"], tags["oneml.launcher"], tags["oneml.engine"]) == ("2", "torchrun", "MULTI_CPU")
    assert proc.stdout.count("eval loss") == 1  # only rank 0 prints the summary


def test_accelerate_launcher_matches_too(tmp_path):
    """accelerate launch with the generated config file: the same loss curve as one process."""
    _, one, one_curve, _ = _run(tmp_path, "one", batch_size=4)
    port = str(free_port())
    run, two, two_curve, _ = _run(
        tmp_path, "acc", "--launcher", "accelerate", "--nproc", "2", "--master-port", port, batch_size=2
    )
    assert two_curve == pytest.approx(one_curve, rel=REL)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=REL)
    assert run["tags"]["oneml.launcher"] == "accelerate" and run["tags"]["oneml.engine"] == "MULTI_CPU"
    assert (tmp_path / "acc" / "launch" / run["tags"]["oneml.run_id"] / "accelerate.yaml").is_file()


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_fsdp_on_two_cpu_processes_matches_one_and_saves_the_whole_adapter(tmp_path, method):
    """FSDP2 over two gloo processes (cpu_fsdp.py): the same loss curve as one process, and the adapter it saves
    is the gathered whole (each rank holds half of every weight while training; QLoRA's 4-bit base too, stored
    as floats so that FSDP shards it)."""
    from safetensors.torch import load_file

    one_run, one, one_curve, _ = _run(tmp_path, "one", "--set", f"method.name={method}", batch_size=4)
    port = str(free_port())
    run, fsdp, curve, _ = _run(
        tmp_path, "fsdp", "--launcher", "torchrun", "--nproc", "2", "--strategy", "fsdp", "--master-port", port,
        "--set", f"method.name={method}", batch_size=2,
    )  # fmt: skip
    assert len(curve) == 6 and curve == pytest.approx(one_curve, rel=REL)
    for key in ("eval_loss", "eval_token_accuracy", "initial_eval_loss", "train_tokens"):
        assert fsdp[key] == pytest.approx(one[key], rel=REL), key
    tags = run["tags"]
    assert (tags["oneml.strategy"], tags["oneml.engine"], tags["oneml.engine.fsdp_version"]) == ("fsdp", "FSDP", "2")
    assert tags["oneml.engine.cpu_fsdp"] == "true"

    one_id, fsdp_id = one_run["tags"]["oneml.run_id"], tags["oneml.run_id"]
    folder = tmp_path / "fsdp" / "runs" / fsdp_id
    whole = load_file(tmp_path / "one" / "runs" / one_id / "model" / "adapter_model.safetensors")
    saved = load_file(folder / "model" / "adapter_model.safetensors")
    assert saved.keys() == whole.keys()
    assert all(saved[key].shape == tensor.shape for key, tensor in whole.items())  # gathered, not one rank's shard
    for key, tensor in whole.items():
        if tensor.dtype == torch.float32:  # QLoRA's bfloat16 factors differ by rounding steps, which Adam carries on
            torch.testing.assert_close(saved[key], tensor, rtol=1e-3, atol=1e-5)
    # Reloaded in one process (for QLoRA: the base quantized again, its usual uint8 storage), the saved adapter
    # scores the run's own eval split exactly as the trained, sharded model did.
    scored = oneml("eval", str(folder), "-b", "perplexity", "--root", str(tmp_path / "fsdp"), "--quiet")
    assert scored.returncode == 0, scored.stderr[-3000:]
    reloaded = json.loads((folder / "eval" / "perplexity.json").read_text())["metrics"]
    assert reloaded["bench-lower/perplexity/loss"] == pytest.approx(fsdp["eval_loss"], rel=1e-5)


def test_fsdp_run_killed_after_a_checkpoint_resumes_to_the_same_result(tmp_path):
    """kill -9 of a rank mid-step after a checkpoint (sharded optimizer state saved through accelerate), then
    the same command again: it resumes and ends where the uninterrupted run ends."""
    args = ("--launcher", "torchrun", "--nproc", "2", "--strategy", "fsdp")
    _, whole, _, _ = _run(tmp_path, "whole", *args, "--master-port", str(free_port()), batch_size=2, save_steps=3)
    root = tmp_path / "cut"
    cfg = write_config(tmp_path / "cut-cfg", train={"batch_size": 2, "save_steps": 3}, tracking={"root": str(root)})
    port = ("--master-port", str(free_port()))
    killed = oneml("train", str(cfg), "--quiet", *args, *port, ONEML_FAULT="step:5")
    assert killed.returncode != 0
    assert (root / "runs").is_dir() and [p.name for p in (root / "runs").iterdir() if p.name.endswith(".ckpt")]
    resumed = oneml("train", str(cfg), "--quiet", *args, *port)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (run_dir,) = (root / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("eval_loss", "eval_token_accuracy", "steps"):
        assert metrics[key] == pytest.approx(whole[key], rel=REL), key
    # One record, continued: steps 1-3 were logged once (a restart from scratch would log them twice).
    (run,) = list_runs(resolve_tracking_uri(None, root))
    from mlflow.tracking import MlflowClient

    history = MlflowClient(resolve_tracking_uri(None, root)).get_metric_history(run["mlflow_run_id"], "train_loss")
    steps = sorted(m.step for m in history)
    assert [steps.count(s) for s in (1, 2, 3)] == [1, 1, 1] and steps[-1] == 6, steps
