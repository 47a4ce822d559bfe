"""Successive halving: on a grid whose answer is clear the high learning rate wins on 8 tiny steps; configurations
are ranked in their metric's direction, a failed seed sinks its configuration, a metric no rung records is refused
before anything runs, and every rung's values and decisions are in MLflow for the report's rung table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from studykit import TINY, write_study

from clikit import run_cli
from oneml.analysis.metrics import METRICS
from oneml.analysis.results import load_study as analysis_study
from oneml.analysis.rungs import halving_note, rung_table
from oneml.errors import OnemlError
from oneml.study import expand, halving, load_study
from oneml.study.halving import Rung, run_halving
from oneml.study.run import run_study
from oneml.study.spec import RUNG_METRICS
from oneml.study.state import rung_metrics, state
from oneml.tracking import resolve_tracking_uri

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from halving import compare, spec  # noqa: E402


@pytest.mark.slow
def test_halving_picks_the_full_grid_winner_with_less_compute(tmp_path):
    figures = compare(tmp_path)
    assert figures["full_best_lr"] == figures["halving_best_lr"] == 1e-2
    assert figures["full_steps"] == 4 * 2 * 8
    assert figures["halving_steps"] == 2 * (4 * 2 + 2 * 2 + 1 * 4)  # rungs at 2, 4, 8 keep 4, 2, 1 configs
    assert figures["steps_ratio"] == 0.5

    study = spec("lr-halving", tmp_path / "halving", True)
    states = [state(t) for t in expand(study)]
    assert states.count("finished") == 2 and states.count("pruned") == 6
    client = MlflowClient(resolve_tracking_uri(None, tmp_path / "halving"))
    pruned = client.search_runs(["1"], "tags.`oneml.pruned` = 'true'")
    assert len(pruned) == 6 and {r.info.status for r in pruned} == {"KILLED"}
    assert all(r.data.tags["oneml.pruned_reason"].startswith("rung ") for r in pruned)

    again = run_study(study, progress=False)  # a resumed halving study makes the same decisions, trains nothing
    assert again.steps_trained == 0


# --- direction, validation and the rung records -----------------------------------------------------------------

# Rung values per (method.r, learning rate) of the tiny grid, seeds 0 and 1: (4, 1e-3) is the most accurate.
ACCURACY = {(4, 1e-3): (0.9, 0.88), (4, 1e-2): (0.5, 0.52), (8, 1e-3): (0.7, 0.72), (8, 1e-2): (0.3, 0.32)}


def _fake_halving(monkeypatch, tmp_path, metric: str, values: dict, mark=None):
    """run_halving over the tiny grid (rungs at 2 and 4, eta 2) with made-up rung values (None = a failed seed)."""
    study = load_study(write_study(tmp_path, halving={"min_steps": 2, "eta": 2, "metric": metric}))
    trials = expand(study)

    def fake_rung_metrics(trial, step):
        value = values[trial.config.method.r, trial.config.train.learning_rate][trial.seed]
        return None if value is None else {metric: value, "steps": float(step)}

    monkeypatch.setattr(halving, "rung_metrics", fake_rung_metrics)
    monkeypatch.setattr(halving, "state", lambda trial: "pending")
    pruned: dict[tuple[int, float], str] = {}

    def prune(trial, reason):
        pruned[trial.config.method.r, trial.config.train.learning_rate] = reason

    args = (mark,) if mark else ()
    history = run_halving(trials, study.halving, lambda pairs: None, prune, *args)
    kept = {(t.config.method.r, t.config.train.learning_rate) for t in trials if t.config.config_id in history[0]}
    return kept, pruned


def test_higher_is_better_metric_keeps_the_best(monkeypatch, tmp_path):
    kept, pruned = _fake_halving(monkeypatch, tmp_path, "eval_token_accuracy", ACCURACY)
    assert kept == {(4, 1e-3), (8, 1e-3)}
    assert pruned[8, 1e-2] == "rung 0 (step 2): eval_token_accuracy 0.31 ranked 4 of 4"
    losses = {k: tuple(1 - v for v in seeds) for k, seeds in ACCURACY.items()}  # lower is still better for a loss
    assert _fake_halving(monkeypatch, tmp_path / "loss", "eval_loss", losses)[0] == {(4, 1e-3), (8, 1e-3)}


def test_failed_seed_sinks_its_configuration_whatever_the_direction(monkeypatch, tmp_path):
    failed = ACCURACY | {(4, 1e-3): (0.9, None)}
    kept, pruned = _fake_halving(monkeypatch, tmp_path, "eval_token_accuracy", failed)
    assert kept == {(8, 1e-3), (4, 1e-2)}
    assert pruned[4, 1e-3] == "rung 0 (step 2): eval_token_accuracy nan (a seed failed) ranked 4 of 4"
    losses = ACCURACY | {(8, 1e-2): (None, 0.32)}
    assert (8, 1e-2) not in _fake_halving(monkeypatch, tmp_path / "loss", "eval_loss", losses)[0]


def test_every_trial_is_marked_with_its_value_rank_and_decision(monkeypatch, tmp_path):
    marks: list[tuple[tuple[int, float], Rung]] = []
    record = lambda t, rung: marks.append(((t.config.method.r, t.config.train.learning_rate), rung))  # noqa: E731
    _fake_halving(monkeypatch, tmp_path, "eval_token_accuracy", ACCURACY, record)
    assert [rung for key, rung in marks if key == (4, 1e-3)] == [
        Rung(0, 2, 0.9, 1, 4, True),
        Rung(0, 2, 0.88, 1, 4, True),
    ]
    assert (
        sorted((r.rank, r.kept) for _, r in marks)
        == [(1, True)] * 2 + [(2, True)] * 2 + [(3, False)] * 2 + [(4, False)] * 2
    )


def test_every_rung_metric_is_one_the_analysis_knows_and_the_objectives_record():
    import torch

    from oneml.objectives import OBJECTIVES

    for keys in RUNG_METRICS.values():
        assert all(k in METRICS and not METRICS[k].cost for k in keys)  # a direction for the ranking
    seq = {k: torch.tensor([-3.0, -5.0]) for k in ("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected")}
    seq |= {"chosen_len": torch.tensor([2.0, 3.0]), "rejected_len": torch.tensor([2.0, 4.0])}
    for name in ("dpo", "orpo"):
        recorded = {f"eval_{k}" for k in OBJECTIVES.get(name)(name=name).scores(seq)}
        assert set(RUNG_METRICS["preference"]) <= recorded, name


def test_unknown_metric_is_refused_at_load_in_one_line(tmp_path):
    with pytest.raises(OnemlError) as err:
        load_study(write_study(tmp_path, halving={"min_steps": 2, "metric": "eval_acc"}))
    message = str(err.value)
    assert "\n" not in message and message.endswith(", got 'eval_acc'")
    listed = message.split("halving.metric: must be one of ")[1].removesuffix(", got 'eval_acc'").split(", ")
    assert listed[0] == "eval_loss" and {"eval_token_accuracy", "eval_preference_accuracy"} <= set(listed)


def test_unknown_metric_through_the_cli_exits_2_and_records_nothing(tmp_path, capsys):
    path = write_study(tmp_path, halving={"min_steps": 2, "metric": "eval_acc"})
    code, out, err = run_cli(capsys, "study", "run", str(path))
    assert code == 2 and "halving.metric" in err and "eval_token_accuracy" in err and "eval_acc" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "root").exists()


def test_metric_the_objective_does_not_record_is_refused_before_anything_runs(tmp_path):
    base = yaml.safe_load(TINY.read_text())["base"] | {"objective": {"name": "dpo"}}
    base |= {"data": {"dataset": "dpo-demo", "max_samples": 32, "eval_size": 8, "max_length": 96}}
    base["tracking"] = {"root": str(tmp_path / "root")}
    path = write_study(tmp_path, base=base, halving={"min_steps": 2, "metric": "eval_token_accuracy"})
    with pytest.raises(
        OnemlError, match=r"^halving.metric: eval_token_accuracy is not recorded by objective dpo"
    ) as err:
        run_study(load_study(path), progress=False)
    assert "eval_preference_accuracy" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "root" / "mlflow.db").exists()


def test_tiny_accuracy_study_keeps_the_most_accurate_and_records_its_rungs(tmp_path):
    """Real training: token accuracy at step 2 is 0.0 for lr 1e-4 and above for lr 3e-2 on these seeds."""
    grid = {"main": {"grid": {"train.learning_rate": [1.0e-4, 3.0e-2]}}}
    path = write_study(tmp_path, tracks=grid, halving={"min_steps": 2, "eta": 2, "metric": "eval_token_accuracy"})
    study = load_study(path)
    result = run_study(study, progress=False)
    rates = {t.run_id: t.config.train.learning_rate for t in result.trials}
    assert {rates[r] for r, s in result.states.items() if s == "finished"} == {3e-2}
    accuracy: dict[float, list[float]] = {}
    for trial in result.trials:
        accuracy.setdefault(rates[trial.run_id], []).append(rung_metrics(trial, 2)["eval_token_accuracy"])
    assert sum(accuracy[3e-2]) > sum(accuracy[1e-4])

    uri = resolve_tracking_uri(None, tmp_path / "root")
    results = analysis_study("tiny", uri)
    assert results.parent_tags["oneml.halving.rungs"] == "2" and results.parent_tags["oneml.halving.eta"] == "2"
    assert results.parent_tags["oneml.halving.metric"] == "eval_token_accuracy"
    assert results.parent_tags["oneml.halving.min_steps"] == "2"
    table = rung_table(results)
    mean = sum(accuracy[3e-2]) / 2
    assert [row[:3] + row[4:] for row in table.rows] == [
        ["0", "2", "lora learning_rate=0.03", "2", "1 of 2", "kept"],
        ["0", "2", "lora learning_rate=0.0001", "2", "2 of 2", "pruned"],
    ]
    assert table.rows[0][3].startswith(f"{mean:.4f} [") and table.rows[1][3] == "0.0000 [0.0000, 0.0000]"
    assert "pruned 1 of 2 configurations" in halving_note(results)

    again = run_study(study, progress=False)  # a resume records the same rungs again, nothing more
    assert again.steps_trained == 0
    assert rung_table(analysis_study("tiny", uri)).rows == table.rows
    client = MlflowClient(uri)
    trial_runs = [r for r in client.search_runs(["1"], "tags.`oneml.study` = 'tiny'") if "oneml.seed" in r.data.tags]
    assert len(trial_runs) == 4
    for run in trial_runs:
        assert {k for k in run.data.tags if k.startswith("oneml.rung.")} == {
            f"oneml.rung.2.{f}" for f in ("value", "rank", "of", "decision")
        }
        assert not any(k.startswith("rung") for k in run.data.metrics)
