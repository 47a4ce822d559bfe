"""`oneml eval RUN -b winrate --judge ...` end to end on a tiny trained run: answers generated, pairs judged in both
orders, the rates on the run's MLflow record, everything kept in eval/winrate.json; bad input is one line, exit 2,
and records nothing (an unreachable endpoint before the run's model is loaded)."""

from __future__ import annotations

import json

import pytest
from judgekit import Scripted, completion, prefers_longer
from mlflow.tracking import MlflowClient

from clikit import run_cli
from oneml.tracking import resolve_tracking_uri


def mlflow_metrics(root, result):
    client = MlflowClient(tracking_uri=resolve_tracking_uri(None, root))
    return client.get_run(result.mlflow_run_id).data.metrics


def winrate_file(result):
    return json.loads((result.run_dir / "eval" / "winrate.json").read_text())


def judge_cli(capsys, root, result, judge, *extra):
    return run_cli(capsys, "eval", result.run_id, "-b", "winrate", "--judge", judge, "--limit", "4",
                   "--max-new-tokens", "8", "--root", str(root), "-q", *extra)  # fmt: skip


def test_endpoint_judge_against_the_base_model_records_rates_and_every_judgment(trained, capsys):
    root, result = trained
    with Scripted(prefers_longer) as server:
        code, out, err = judge_cli(capsys, root, result, server.url)
        assert code == 0, err
        assert len(server.requests) == 8  # 4 prompts x both orders
    section = winrate_file(result)["sections"]["base"]
    details = section["details"]
    assert details["rows"] == "eval" and details["prompts"] == 4 and details["judge_kind"] == "endpoint"
    records = details["records"]
    assert [j["order"] for j in records[0]["judgments"]] == ["model_first", "opponent_first"]
    assert all(j["raw"] in ("m", "M", "tie") for r in records for j in r["judgments"])
    # a judge that only looks at length: the longer answer wins in both orders, equal lengths tie
    for r in records:
        longer = (r["model_chars"] > r["opponent_chars"]) - (r["model_chars"] < r["opponent_chars"])
        assert r["preference"] == {1: 1.0, 0: 0.5, -1: 0.0}[longer]
    stats = details["statistics"]
    m = mlflow_metrics(root, result)
    assert m["bench/winrate/base/win_rate"] == pytest.approx(stats["win_rate"])
    assert m["bench/winrate/base/lc_win_rate"] == pytest.approx(stats["lc_win_rate"])
    assert m["winrate/base/lc_low"] <= stats["lc_win_rate"] <= m["winrate/base/lc_high"]
    assert stats["win_rate"] == pytest.approx(sum(r["preference"] for r in records) / 4)
    assert "LC win rate" in out and "4 of 4 prompts judged in both orders" in out


def test_against_reference_keeps_both_sections_and_a_budget_stops_cleanly(trained, capsys):
    root, result = trained
    with Scripted(prefers_longer) as server:
        assert judge_cli(capsys, root, result, server.url)[0] == 0
        code, out, err = judge_cli(capsys, root, result, server.url, "--against", "reference", "--judge-budget", "5")
        assert code == 0, err
        assert len(server.requests) == 8 + 5
    saved = winrate_file(result)
    assert set(saved["sections"]) == {"base", "reference"}  # the earlier comparison is kept
    ref = saved["sections"]["reference"]["details"]
    assert ref["stopped_early"] == "the request budget (5 requests) was spent" and ref["requests_used"] == 5
    assert ref["prompts_judged"] == 2 and ref["prompts_not_judged"] == 2
    assert ref["records"][0]["opponent_answer"]  # the data's own answer
    assert "bench/winrate/reference/win_rate" in mlflow_metrics(root, result)
    assert "stopped early: the request budget" in out


def test_parse_failures_are_kept_and_counted_not_tied(trained, capsys):
    root, result = trained
    replies = iter(["m", "I think both have merit", "M", "M"] + ["m", "M"] * 4)
    with Scripted(lambda body: completion(next(replies))) as server:
        code, out, err = judge_cli(capsys, root, result, server.url, "--against", "reference")
        assert code == 0, err
    details = winrate_file(result)["sections"]["reference"]["details"]
    assert details["parse_failures"] == 1 and details["prompts_with_parse_failure"] == 1
    bad = details["records"][0]
    assert bad["status"] == "parse_failure" and bad["preference"] is None
    assert bad["judgments"][1] == {
        "order": "opponent_first", "raw": "I think both have merit", "verdict": None, "score": None, "error": None,
    }  # fmt: skip
    assert details["prompts_judged"] == 3 and details["statistics"]["n"] == 3


def test_against_another_run_uses_its_model_and_records_the_overlap(trained, capsys, tmp_path):
    from evalkit import tiny_run

    root, result = trained
    other = tiny_run(root, "method.r=2")
    with Scripted(prefers_longer) as server:
        code, out, err = judge_cli(capsys, root, result, server.url, "--against", other.run_id[:8])
        assert code == 0, err
    details = winrate_file(result)["sections"][other.run_id]["details"]
    assert details["opponent"] == f"run {other.run_id}" and details["opponent_training_overlap"] == 0
    assert f"bench/winrate/{other.run_id}/win_rate" in mlflow_metrics(root, result)


def test_a_local_model_judges_in_process(trained, capsys):
    """A tiny random model as the judge: its replies are noise, so every judgment is a kept parse failure; what is
    tested is the plumbing (load, chat layout, both orders, records), not the verdicts."""
    root, result = trained
    code, out, err = judge_cli(capsys, root, result, "tiny-qwen2", "--against", "reference")
    assert code == 0, err
    details = winrate_file(result)["sections"]["reference"]["details"]
    assert details["judge_kind"] == "model" and details["judgments"] == 8
    assert details["parse_failures"] + 2 * details["prompts_judged"] == 8
    assert all(isinstance(j["raw"], str) for r in details["records"] for j in r["judgments"])


@pytest.mark.slow
def test_the_embedded_model_judges(trained, capsys):
    root, result = trained
    code, out, err = run_cli(capsys, "eval", result.run_id, "-b", "winrate", "--judge", "smollm2-135m",
                             "--against", "reference", "--limit", "2", "--max-new-tokens", "8", "--root", str(root),
                             "-q")  # fmt: skip
    assert code == 0, err
    details = winrate_file(result)["sections"]["reference"]["details"]
    assert details["judge"].startswith("smollm2-135m") and details["judgments"] == 4
    assert all(j["raw"] for r in details["records"] for j in r["judgments"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-b", "winrate"], "winrate: needs --judge"),
        (["-b", "winrate", "--judge", "tiny-lama"], "--judge: unknown model 'tiny-lama'"),
        (
            ["-b", "winrate", "--judge", "http://127.0.0.1:9/v1"],
            "--judge: endpoint http://127.0.0.1:9/v1 is unreachable",
        ),
        (["-b", "winrate", "--judge", "tiny-llama", "--against", "nosuchrun"], "--against: 'nosuchrun' is neither"),
        (["-b", "perplexity", "--judge", "tiny-llama"], "--judge: none of the benchmarks named takes a judge"),
        (["-b", "winrate", "--against", "reference"], "only with --judge"),
    ],
)
def test_bad_input_is_one_line_exit_2_records_nothing_and_loads_no_model(trained, capsys, monkeypatch, args, message):
    import oneml.eval.trained as trained_module

    def no_model(*a, **k):
        raise AssertionError("the run's model was loaded before the input was checked")

    monkeypatch.setattr(trained_module, "load_trained", no_model)
    root, result = trained
    before = set(mlflow_metrics(root, result))
    eval_dir = result.run_dir / "eval"
    files_before = {p: p.read_bytes() for p in eval_dir.iterdir()} if eval_dir.is_dir() else {}
    code, _, err = run_cli(capsys, "eval", result.run_id, "--root", str(root), "-q", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert set(mlflow_metrics(root, result)) == before
    assert ({p: p.read_bytes() for p in eval_dir.iterdir()} if eval_dir.is_dir() else {}) == files_before


def test_missing_key_variable_is_refused_before_anything(trained, capsys, monkeypatch):
    root, result = trained
    monkeypatch.delenv("ONEML_NO_SUCH_KEY", raising=False)
    with Scripted(prefers_longer) as server:
        code, _, err = judge_cli(capsys, root, result, server.url, "--judge-key-env", "ONEML_NO_SUCH_KEY")
        assert code == 2 and "environment variable ONEML_NO_SUCH_KEY is not set" in err
        assert server.requests == []
