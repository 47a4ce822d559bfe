"""`oneml eval` end to end on a tiny trained run: every benchmark runs, its scores land in MLflow and in the
run folder; bad input is one line, exit 2, and records nothing."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from test_truthfulqa import rows as truthfulqa_rows

from clikit import run_cli
from oneml.tracking import resolve_tracking_uri


def mlflow_metrics(root, result):
    client = MlflowClient(tracking_uri=resolve_tracking_uri(None, root))
    return client.get_run(result.mlflow_run_id).data.metrics


def test_perplexity_of_the_reloaded_run_equals_its_recorded_eval_loss(trained, capsys):
    root, result = trained
    code, out, err = run_cli(capsys, "eval", result.run_id[:6], "-b", "perplexity", "--root", str(root), "-q")
    assert code == 0, err
    m = mlflow_metrics(root, result)
    assert m["bench-lower/perplexity/loss"] == pytest.approx(result.metrics["eval_loss"], rel=1e-6)
    assert m["bench/perplexity/token_accuracy"] == pytest.approx(result.metrics["eval_token_accuracy"], rel=1e-6)
    saved = json.loads((result.run_dir / "eval" / "perplexity.json").read_text())
    assert saved["metrics"]["bench-lower/perplexity/loss"] == m["bench-lower/perplexity/loss"]


def test_every_benchmark_runs_and_is_recorded(trained, capsys, tmp_path, lm_eval_task):
    root, result = trained
    tqa = tmp_path / "tqa.jsonl"
    tqa.write_text("\n".join(json.dumps(r) for r in truthfulqa_rows(3)))
    benches = "gsm8k,ifeval,truthfulqa,eos,inference,lm-eval:oneml_toy"
    code, out, err = run_cli(
        capsys, "eval", result.run_id, "-b", benches, "--limit", "2", "--max-new-tokens", "12", "--root", str(root),
        "--data", f"truthfulqa={tqa}", "--lm-eval-include", str(lm_eval_task), "-q",
    )  # fmt: skip
    assert code == 0, err
    m = mlflow_metrics(root, result)
    for key in (
        "bench/gsm8k/exact_match",
        "bench/gsm8k/strict_match",
        "bench/ifeval/prompt_strict",
        "bench/ifeval/instruction_loose",
        "bench/truthfulqa/mc1",
        "bench/truthfulqa/mc2",
        "bench/eos/rate",
        "bench/lm-eval/oneml_toy/acc",
        "inference_ms_per_token",
        "inference_merged_ms_per_token",
    ):
        assert key in m, key
        assert key.split("/")[-1] in out or key in out
    assert 0.0 <= m["bench/truthfulqa/mc2"] <= 1.0 and m["inference_ms_per_token"] > 0
    assert m["inference_kv_cache_mib"] == m["inference_merged_kv_cache_mib"] > 0
    assert m["inference_merged_weights_mib"] < m["inference_weights_mib"]  # the adapter is folded away
    files = {p.name for p in (result.run_dir / "eval").iterdir()}
    assert {"gsm8k.json", "ifeval.json", "truthfulqa.json", "eos.json", "inference.json"} <= files
    gsm = json.loads((result.run_dir / "eval" / "gsm8k.json").read_text())
    assert gsm["settings"]["limit"] == 2 and len(gsm["details"]["records"]) == 2
    ife = json.loads((result.run_dir / "eval" / "ifeval.json").read_text())["details"]
    assert ife["prompts_skipped_unsupported"] > 0 and "words:start_verb" not in ife["instruction_types_supported"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-b", "gsm8kk"], "unknown benchmark 'gsm8kk'"),
        (["-b", "truthfulqa"], "the data is on the Hugging Face hub only"),
        (["-b", "lm-eval:no_such_task_x"], "unknown lm-eval task"),
        (["-b", "gsm8k", "--data", "gsm8k"], "--data: expected NAME=FILE"),
        (["-b", "gsm8k", "--shots", "12"], "--shots"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_records_nothing(trained, capsys, args, message):
    root, result = trained
    before = set(mlflow_metrics(root, result))
    eval_dir = result.run_dir / "eval"
    files_before = set(eval_dir.iterdir()) if eval_dir.is_dir() else set()
    code, _, err = run_cli(capsys, "eval", result.run_id, "--root", str(root), "-q", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert set(mlflow_metrics(root, result)) == before
    assert (set(eval_dir.iterdir()) if eval_dir.is_dir() else set()) == files_before


def test_unknown_run_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", "nosuchrun", "--root", str(tmp_path))
    assert code == 2 and "RUN: 'nosuchrun'" in err


def test_benchmarks_command_lists_the_catalogue_and_the_unscored_instruction_types(capsys):
    code, out, _ = run_cli(capsys, "benchmarks")
    assert code == 0
    for name in ("gsm8k", "ifeval", "truthfulqa", "perplexity", "eos", "inference", "lm-eval:<task>"):
        assert name in out
    assert "not scored: words:start_verb" in out
