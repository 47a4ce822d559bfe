"""Replication: the comparison of two guides row by row on crafted results with a known answer (held, changed,
not confirmed, decided now), and one real tiny-model study replicated with fresh seeds through the CLI, with its
bad inputs refused in one line before anything is recorded."""

from __future__ import annotations

import csv

import pytest
from mlflow.tracking import MlflowClient
from studykit import write_study

from clikit import run_cli
from oneml.analysis import DecisionOptions, analyse
from oneml.analysis.results import Configuration, RunData
from oneml.analysis.results import load_study as load_results
from oneml.errors import OnemlError
from oneml.study.replicate import Side, compare_guides, outcome, parse_seeds
from oneml.tracking import resolve_tracking_uri


def config(label: str, losses: list[float]) -> Configuration:
    runs = [
        RunData(
            f"{label}-{s}",
            f"{label}-{s}",
            "FINISHED",
            label,
            "lora",
            "m",
            "sft",
            "d",
            str(s),
            "t",
            {},
            {},
            {},
            {"eval_loss": v},
        )  # fmt: skip
        for s, v in enumerate(losses)
    ]
    return Configuration(label, label, label, "lora", "m", "sft", "d", "t", runs)


def guide(a: list[float], b: list[float]):
    return [analyse([config("a", a), config("b", b)], DecisionOptions(margin="0.1%"))]


CLEAR_A = ([1.40, 1.401, 1.399, 1.4005], [1.50, 1.501, 1.499, 1.5003])  # a decided best
CLEAR_B = ([1.50, 1.501, 1.499, 1.5003], [1.40, 1.401, 1.399, 1.4005])  # b decided best
NOISY = ([1.40, 1.45, 1.36, 1.43], [1.41, 1.37, 1.46, 1.40])  # nothing decided


def performance(before, after) -> str:
    return next(r for r in compare_guides(guide(*before), guide(*after)) if r.priority == "performance").outcome


def test_each_outcome_on_guides_with_a_known_answer():
    assert performance(CLEAR_A, CLEAR_A) == "held"
    assert performance(CLEAR_A, CLEAR_B) == "changed"
    assert performance(CLEAR_A, NOISY) == "not confirmed"
    assert performance(NOISY, CLEAR_B) == "decided now"
    assert performance(NOISY, NOISY) == "inconclusive both"
    rows = {r.priority: r for r in compare_guides(guide(*CLEAR_A), guide(*CLEAR_B))}
    assert rows["performance"].before == "decided: a" and rows["performance"].after == "decided: b"
    assert rows["preference"].outcome == "no answer"  # no preference runs in either
    assert outcome(Side("decided", "x"), None) == "not confirmed"  # a group with no finished run when replicated


def test_seed_lists_are_checked():
    assert parse_seeds("100,101, 102") == [100, 101, 102]
    for text in ("100", "a,b", "1,1", ""):
        with pytest.raises(OnemlError, match="--seeds"):
            parse_seeds(text)


def test_replicate_a_tiny_study(tmp_path, capsys):
    grid = {"train.learning_rate": [1.0e-2, 1.0e-4], "method.r": [4]}
    path = write_study(tmp_path, tracks={"main": {"grid": grid}}, seeds=[0, 1, 2], margin="1%")
    code, _, err = run_cli(capsys, "study", "run", str(path), "--quiet")
    assert code == 0, err
    uri = resolve_tracking_uri(None, tmp_path / "root")
    client = MlflowClient(uri)
    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    for seeds, words in [("2,100", "2 already used by study tiny"), ("100", "two or more"), ("a,b", "integers")]:
        code, _, err = run_cli(capsys, "study", "replicate", str(path), "--seeds", seeds, "--quiet")
        assert code == 2 and words in err and err.strip().count("\n") == 0, err
    code, _, err = run_cli(capsys, "study", "replicate", str(tmp_path / "nope.yaml"), "--seeds", "100,101")
    assert code == 2 and "config file not found" in err
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == before  # nothing

    code, out, err = run_cli(capsys, "study", "replicate", str(path), "--seeds", "100,101,102", "--quiet")
    assert code == 0, err
    assert "replication tiny-replicate of tiny" in out and "held" in out
    folder = tmp_path / "root" / "reports" / "tiny-replicate"
    rows = {r["priority"]: r for r in csv.DictReader((folder / "replication.csv").open())}
    assert rows["performance"]["outcome"] == "held" and "learning_rate=0.01" in rows["performance"]["before"]
    assert (folder / "report.html").is_file() and "| performance |" in (folder / "replication.md").read_text()

    replica = load_results("tiny-replicate", uri, artifacts=False)
    assert sorted(r.seed for r in replica.runs) == ["100", "100", "101", "101", "102", "102"]
    assert {r.tags["oneml.replicate_of"] for r in replica.runs} == {"tiny"}
    assert replica.parent_tags["oneml.replicate_of"] == "tiny"
    original = load_results("tiny", uri, artifacts=False)
    assert sorted(r.seed for r in original.runs) == ["0", "0", "1", "1", "2", "2"]  # kept apart
    assert {c.config_id for c in replica.configs} == {c.config_id for c in original.configs}
