"""The `oneml` command end to end: listings, a tiny training run, runs listing, and error exits."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clikit import run_cli
from oneml.data import DATASETS
from oneml.methods import METHODS
from oneml.models import MODELS


@pytest.mark.parametrize("command, registry", [("models", MODELS), ("datasets", DATASETS), ("methods", METHODS)])
def test_listings_show_every_registered_name(capsys, command, registry, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(capsys, command)
    assert code == 0
    for name in registry.names():
        assert name in out


def test_keys_lists_fields_with_docs(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = run_cli(capsys, "keys", "method")
    assert code == 0
    assert "method[lora].target_modules" in out and "all-linear" in out
    assert run_cli(capsys, "keys", "nosuch")[0] == 2


def test_print_config(capsys):
    code, out, _ = run_cli(capsys, "train", "--set", "method.r=8", "--print-config")
    assert code == 0
    assert "r: 8" in out and "# run id:" in out


def test_train_then_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    config = tmp_path / "run.yaml"
    config.write_text(
        "model: {name: tiny-qwen2}\n"
        "method: {name: lora, r: 4, target_modules: all-linear}\n"
        "data: {dataset: alpaca-demo, max_samples: 40, eval_size: 8, max_length: 96}\n"
        f"train: {{max_steps: 3, batch_size: 4, logging_steps: 1}}\ntracking: {{root: {tmp_path / 'runs'}}}\n"
    )
    code, out, err = run_cli(capsys, "train", str(config), "--quiet")
    assert code == 0, err
    assert "eval loss" in out and "tokens/s" in out
    code, out, _ = run_cli(capsys, "runs", "--root", str(tmp_path / "runs"))
    assert code == 0
    assert "FINISHED" in out and "tiny-qwen2" in out and "1 run(s)" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--set", "method.r=0"], "method.r: must be a positive integer, got 0"),
        (["train", "missing.yaml"], "missing.yaml: config file not found"),
        (["train", "--set", "model.name=tiny-lama"], "did you mean 'tiny-llama'?"),
        (["train", "--set", "data.dataset=alpaca-dem"], "did you mean 'alpaca-demo'?"),
        (["train", "--set", "data.dataset=/no/such/file.jsonl"], "file not found: /no/such/file.jsonl"),
        (["runs", "--root", "/no/such/dir"], "no runs recorded"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *argv, *(["--set", f"tracking.root={tmp_path}"] if argv[0] == "train" else []))
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("dataset", ["alpaca-dem", "/no/such/file.jsonl"])
def test_a_bad_dataset_is_refused_before_the_model_loads(capsys, tmp_path, monkeypatch, dataset):
    """A misspelt dataset must not cost a model load (for the embedded model, its one-off conversion, whose
    progress lines would come before the error)."""

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the data sources were checked")

    monkeypatch.setattr("oneml.models.load_model_and_tokenizer", loaded)
    code, _, err = run_cli(capsys, "train", "--set", f"data.dataset={dataset}", "--set", f"tracking.root={tmp_path}")
    assert code == 2 and err.startswith("error: data.dataset:") and len(err.strip().splitlines()) == 1


def test_target_modules_matching_nothing_lists_linear_layers(capsys, tmp_path):
    code, _, err = run_cli(
        capsys,
        "train",
        "--set",
        "model.name=tiny-llama",
        "--set",
        "method.target_modules=[attn]",
        "--set",
        f"tracking.root={tmp_path}",
    )
    assert code == 2
    assert "method.target_modules: attn match no linear layer" in err and "q_proj" in err and "down_proj" in err
    assert not list((tmp_path / "runs").iterdir())


def test_entry_point_exit_code_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "oneml", "train", "--set", "method.rr=8"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "method.rr: unknown key (did you mean 'r'?)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_preference_run_summary(capsys, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("COLUMNS", "200")
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Q{i}?", "chosen": "Yes, gladly.", "rejected": "No."} for i in range(10)]
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, out, err = run_cli(
        capsys, "train", "--quiet", "--set", "model.name=tiny-llama", "--set", "objective.name=dpo",
        "--set", f"data.dataset={pairs}", "--set", "data.eval_size=2", "--set", "data.max_length=64",
        "--set", "train.max_steps=2", "--set", f"tracking.root={tmp_path}",
    )  # fmt: skip
    assert code == 0, err
    assert "preference accuracy" in out and "KL to reference" in out and "perplexity" not in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "some-run"], "Missing option '--out'"),
        (["eval", "some-run", "--limit", "abc"], "Invalid value for '--limit'"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_listings_piped_keep_whole_cells_and_name_study_records(tmp_path):
    """#17: piped output was squeezed to 80 columns ('method.name...', cut run ids) and a study's parent record was
    a row of dashes. A pipe now gets each table at its natural width; the parent row says what it is."""
    import os

    from mlflow.tracking import MlflowClient

    root = tmp_path / "oneml-runs"
    root.mkdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.create_experiment("oneml", artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"oneml.study": "long-study-name", "oneml.study_parent": "true"})
    client.set_terminated(parent.info.run_id)
    tags = {"oneml.run_id": "0123456789abcdef", "oneml.model": "a-rather-long-model-name", "oneml.method": "pissa"}
    trial = client.create_run(exp, tags=tags | {"oneml.seed": "3", "oneml.study": "long-study-name"})
    client.log_metric(trial.info.run_id, "eval_loss", 1.23456)
    client.set_terminated(trial.info.run_id)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run([sys.executable, "-m", "oneml", "runs", "--root", str(root)], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout and "0123456789abcdef" in done.stdout and "a-rather-long-model-name" in done.stdout
    assert "study long-study-name" in done.stdout and "(all its trials)" in done.stdout
    keys = subprocess.run([sys.executable, "-m", "oneml", "keys", "train"], capture_output=True, text=True, env=env)
    assert "…" not in keys.stdout and "train.learning_rate" in keys.stdout


def test_study_table_shows_the_values_that_tell_trials_apart():
    from oneml.cli_study import grid_text

    assert (
        grid_text({"method.name": "lora", "method.r": 8, "train.learning_rate": 2e-4})
        == "lora, r=8, learning_rate=0.0002"
    )
