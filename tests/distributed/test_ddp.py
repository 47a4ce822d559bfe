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
