"""Per-configuration tuning (`tune:`): each configuration gets its own best value on the validation rows, the
tuning runs are tagged and kept out of the comparison, a rerun resumes to the same choice, and bad input is
refused at load in one line."""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient
from studykit import ROOT, write_study

from clikit import run_cli
from oneml.analysis.results import load_study as load_results
from oneml.errors import OnemlError
from oneml.study import expand, load_study
from oneml.study import tune as tuning
from oneml.study.expand import plan
from oneml.study.run import run_study, study_status
from oneml.tracking import resolve_tracking_uri

RATES = [1e-3, 1e-2, 1e-1]
# alpha/r scales LoRA's update, so it scales the effective learning rate: on tiny-llama at these settings
# alpha=1 (scale 0.25) is best at 1e-1 and alpha=64 (scale 16) at 1e-2, where 1e-1 overshoots.
ALPHAS = {"main": {"grid": {"method.alpha": [1, 64]}}}
TUNE = {"grid": {"train.learning_rate": RATES}, "seeds": [0], "budget": {"max_steps": 6}}


def _tuned_study(folder, **changes):
    settings = dict(tracks=ALPHAS, seeds=[0, 1], budget={"max_steps": 8}, tune=TUNE) | changes
    return load_study(write_study(folder, **settings))


# --- bad input: one line naming the field, before anything runs --------------------------------------------------


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"tune": {"grid": {"train.learnin_rate": [1e-3]}, "budget": {"max_steps": 2}}}, "train.learnin_rate"),
        ({"tune": {"grid": {"method.nope": [1]}, "budget": {"max_steps": 2}}}, "tune.grid method.nope=1"),
        ({"tune": {"grid": {}}}, "tune.grid: needs at least one key"),
        ({"tune": {"grid": {"train.weight_decay": []}}}, "tune.grid: train.weight_decay: needs at least one value"),
        ({"tune": {"grid": {"train.learning_rate": [1e-3]}}}, "tune.grid.train.learning_rate: track main already"),
        ({"tune": {"grid": {"train.seed": [1]}}}, "tune.grid: train.seed: set by the study"),
        ({"tune": {"grid": {"train.weight_decay": [0.1]}, "tracks": ["nope"]}}, "tune.tracks: unknown track 'nope'"),
        ({"tune": {"grid": {"train.weight_decay": [0.1]}, "metric": "test_loss"}}, "tune.metric: must be one of"),
        ({"tune": {"grid": {"train.weight_decay": [0.1]}}}, "tune.seeds: seed 0 is also a study seed"),
        (
            {"tune": {"grid": {"train.weight_decay": [0.1]}, "halving": {"min_steps": 2, "metric": "eval_perplexity"}}},
            "tune.halving.metric: must be tune.metric (eval_loss)",
        ),
        ({"tune": {"grid": {"train.weight_decay": [0.1]}, "halving": {"min_steps": 4}}}, "tune.halving.min_steps"),
        (  # DPO's beta scales its loss: picking beta on eval_loss compares different losses
            {"tune": {"grid": {"objective.beta": [0.1, 0.5]}, "seeds": [9]}},
            "tune.metric: eval_loss is defined by objective.beta, which this tuning varies",
        ),
    ],
)
def test_bad_tune_input_is_one_line_naming_the_field(tmp_path, changes, needle):
    with pytest.raises(OnemlError) as err:
        expand(load_study(write_study(tmp_path, **changes)))
    assert "\n" not in str(err.value) and needle in str(err.value), str(err.value)


def test_a_tune_key_that_is_no_config_key_exits_2_through_the_cli_and_records_nothing(tmp_path, capsys):
    path = write_study(tmp_path, tracks=ALPHAS, tune={"grid": {"train.learnin_rate": [1e-3]}, "seeds": [9]})
    code, _, err = run_cli(capsys, "study", "run", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "tune.grid train.learnin_rate=0.001" in err and "unknown key" in err and "learning_rate" in err
    assert not (tmp_path / "root").exists()


def test_an_empty_tune_grid_exits_2_through_the_cli(tmp_path, capsys):
    code, _, err = run_cli(capsys, "study", "run", str(write_study(tmp_path, tune={"grid": {}})))
    assert code == 2 and "tune.grid" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "root").exists()


# --- the choice: direction, failures, halving, stickiness (no training) ------------------------------------------


def _fake_choice(monkeypatch, tmp_path, values: dict, metric="eval_loss", states=None):
    """choose() over one configuration's candidates with made-up validation values (None = failed)."""
    spec = _tuned_study(tmp_path, tune=TUNE | {"metric": metric}, tracks={"main": {}})
    trials, _ = plan(spec)

    def fake(trial):
        value = values[trial.config.train.learning_rate]
        return {} if value is None else {metric: value, "test_loss": -100.0}

    monkeypatch.setattr(tuning, "selection_metrics", fake)
    monkeypatch.setattr(tuning, "state", lambda t: (states or {}).get(t.config.train.learning_rate, "finished"))
    return tuning.choose(spec, trials)


def test_the_choice_follows_the_metric_direction(monkeypatch, tmp_path):
    losses = {1e-3: 2.0, 1e-2: 1.5, 1e-1: 1.7}
    assert _fake_choice(monkeypatch, tmp_path, losses).values == {"train.learning_rate": 1e-2}
    accuracy = {1e-3: 0.2, 1e-2: 0.5, 1e-1: 0.7}
    chosen = _fake_choice(monkeypatch, tmp_path / "acc", accuracy, "eval_token_accuracy")
    assert chosen.values == {"train.learning_rate": 1e-1}


def test_failed_nan_and_pruned_candidates_cannot_win(monkeypatch, tmp_path):
    losses = {1e-3: 2.0, 1e-2: None, 1e-1: math.nan}
    assert _fake_choice(monkeypatch, tmp_path, losses).values == {"train.learning_rate": 1e-3}
    pruned = _fake_choice(monkeypatch, tmp_path / "p", {1e-3: 2.0, 1e-2: 1.0, 1e-1: 3.0}, states={1e-2: "pruned"})
    assert pruned.values == {"train.learning_rate": 1e-3}
    assert _fake_choice(monkeypatch, tmp_path / "none", dict.fromkeys(RATES)) is None


def test_selection_reads_eval_metrics_only(tmp_path):
    spec = _tuned_study(tmp_path, tracks={"main": {}})
    trial = plan(spec)[0][0]
    folder = tmp_path / "root" / "runs" / trial.run_id
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"eval_loss": 2.0, "test_loss": 0.1, "train_loss": 1.0}))
    assert tuning.selection_metrics(trial) == {"eval_loss": 2.0}


# --- real training ------------------------------------------------------------------------------------------------


def _chosen(result) -> dict[int, float]:
    return {t.config.method.alpha: t.config.train.learning_rate for t in result.trials}


def test_each_configuration_gets_its_own_learning_rate(tmp_path):
    spec = _tuned_study(tmp_path)
    rows = study_status(spec)
    assert [r["state"] for r in rows].count("waiting") == 4 and sum(r["track"] == "main (tuning)" for r in rows) == 6
    result = run_study(spec, progress=False)
    assert _chosen(result) == {1: 1e-1, 64: 1e-2}  # the two configurations' best values differ
    assert set(result.states.values()) == {"finished"} and len(result.trials) == 4 and not result.blocked
    assert result.tuning_steps == 6 * 6 and result.steps_trained == 6 * 6 + 4 * 8
    for trial in result.trials:  # the finals carry their configuration's choice
        assert trial.config.tracking.tags["oneml.tuned.train.learning_rate"] == str(trial.config.train.learning_rate)

    uri = resolve_tracking_uri(None, tmp_path / "root")
    runs = MlflowClient(uri).search_runs(["1"], "tags.`oneml.tuning` = 'true'")
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    finals = {t.config.method.alpha: t.config.config_id for t in result.trials}
    for run in runs:
        tags = run.data.tags
        alpha, rate = int(tags["oneml.grid.method.alpha"]), float(tags["oneml.tuning.value.train.learning_rate"])
        assert tags["oneml.tuning.for"] == finals[alpha] and run.data.params["train.save_adapter"] == "False"
        assert tags["oneml.tuning.chosen"] == str(rate == _chosen(result)[alpha]).lower()
    results = load_results("tiny", uri)
    assert len(results.configs) == 2 and all(len(c.runs) == 2 for c in results.configs)
    assert results.excluded == [] and len(results.tuning) == 6  # not in the comparison, not "excluded" either
    assert json.loads(results.parent_tags["oneml.tune.grid"]) == {"train.learning_rate": RATES}

    again = run_study(spec, progress=False)  # resume: the recorded choice, nothing trained
    assert again.steps_trained == 0 and _chosen(again) == _chosen(result)
    assert {r["state"] for r in study_status(spec)} == {"finished"}
    _report_shows_the_tuning(tmp_path, uri)


def _report_shows_the_tuning(tmp_path, uri):
    from oneml.analysis.report import write_report

    write_report([load_results("tiny", uri)], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "### Tuning: each configuration's chosen value" in md
    assert "| lora alpha=1 | 0.1 |" in md and "| lora alpha=64 | 0.01 |" in md
    assert "![Sensitivity to the tuned learning rate](figures/tuning-sensitivity.svg)" in md
    assert "flat lines = robust to the learning rate" in md.lower()
    assert "train.learning_rate was tuned per configuration on the validation rows" in md
    svg = (tmp_path / "report" / "figures" / "tuning-sensitivity.svg").read_text()
    assert "lora alpha=1" in svg and "lora alpha=64" in svg
    html = (tmp_path / "report" / "report.html").read_text()
    assert 'id="figure-tuning-sensitivity"' in html and "table-tuning" in html


@pytest.fixture
def test_split():
    from oneml.config import DataConfig

    if "test_size" not in DataConfig.model_fields:
        pytest.skip("data.test_size is not in this checkout yet")


def test_tuning_selects_on_validation_rows_never_the_test_rows(tmp_path, monkeypatch, test_split):
    """With a test split, the tuning runs' test metrics are poisoned to rank the candidates the other way round:
    the choice still follows eval_*; and no test row is read while a choice is made or at a halving rung."""
    import oneml.study.executors as executors
    from splitkit import Timeline, spy_on_test_rows

    runner = importlib.import_module("oneml.train.runner")  # `import a.b.c as x` trips over tests/train/

    timeline = Timeline()
    spy_on_test_rows(monkeypatch, timeline)
    real_trial, real_choose = executors.run_trial, tuning.choose

    def trial(config, stop_at=None):
        before = len(timeline.reads())
        outcome = real_trial(config, stop_at)
        timeline.events.append(("trial", stop_at, len(timeline.reads()) - before, outcome["status"]))
        return outcome

    def choose(spec, trials):
        before = len(timeline.reads())
        chosen = real_choose(spec, trials)
        timeline.events.append(("choose", len(timeline.reads()) - before))
        return chosen

    def poisoned(self):  # the higher the learning rate, the better its "test" loss
        return {"test_loss": -self.trainer.args.learning_rate}

    monkeypatch.setattr(executors, "run_trial", trial)
    monkeypatch.setattr(tuning, "choose", choose)
    monkeypatch.setattr(runner._TestEvaluation, "__call__", poisoned)
    base = {"test_size": 8, "eval_size": 8, "max_samples": 40}
    tune = TUNE | {"grid": {"train.learning_rate": [1e-3, 1e-2, 2e-1]}}
    spec = _split_study(tmp_path, base, tune=tune, tracks={"main": {"grid": {"method.alpha": [64]}}}, seeds=[0])
    result = run_study(spec, progress=False)
    eval_best = _eval_best(result.tuning)
    assert _chosen(result) == {64: eval_best} and eval_best != 2e-1  # test_loss would have picked 2e-1
    # A tuning run never scores the test rows at all (not even a score no one reads); the finals do.
    assert all(t.tuning == "" or "test_loss" not in _metrics(t) for t in result.tuning)
    assert all(_metrics(t)["test_loss"] < 0 for t in result.trials if t.tuning == "")  # the poison was live
    assert [e for e in timeline.events if e[0] == "choose"] == [("choose", 0)]

    halved = _split_study(tmp_path / "h", base, tune=tune | {"halving": {"min_steps": 2, "eta": 3}}, seeds=[0])
    timeline.events.clear()
    run_study(halved, progress=False)
    rung_calls = [e for e in timeline.events if e[0] == "trial" and e[1] is not None]
    assert len(rung_calls) == 3 * 2 and all(e[2] == 0 for e in rung_calls)  # paused at the rung: no test row


def _split_study(folder, data: dict, **changes):
    import yaml
    from studykit import TINY

    base = yaml.safe_load(TINY.read_text())["base"]
    base["data"] |= data
    base["tracking"] = {"root": str(folder / "root")}
    settings = dict(tracks={"main": {"grid": {"method.alpha": [1, 64]}}}, budget={"max_steps": 8}, base=base)
    return load_study(write_study(folder, **settings | changes))


def _metrics(trial) -> dict[str, float]:
    return json.loads((tuning.root_of(trial) / "runs" / trial.run_id / "metrics.json").read_text())


def _eval_best(trials) -> float:
    losses = {t.config.train.learning_rate: _metrics(t)["eval_loss"] for t in trials}
    return min(losses, key=losses.get)


@pytest.mark.slow
def test_killed_in_the_middle_of_tuning_resumes_to_the_uninterrupted_result(tmp_path):
    """kill -9 of the driver while a tuning run is between checkpoints; the same command finishes the study with
    the same choices and the same final numbers as a study that was never interrupted."""
    changes = dict(tune=TUNE | {"budget": {"max_steps": 40}}, save_steps=2)
    path = write_study(tmp_path / "killed", tracks=ALPHAS, seeds=[0, 1], budget={"max_steps": 8}, **changes)
    spec = load_study(path)
    tuning_trials, _ = plan(spec)
    runs = tmp_path / "killed" / "root" / "runs"
    cmd = [sys.executable, "-m", "oneml", "study", "run", str(path), "--quiet"]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ)
    deadline = time.time() + 300
    finished = lambda: sum((runs / t.run_id / "metrics.json").is_file() for t in tuning_trials)  # noqa: E731
    while time.time() < deadline and not (finished() >= 2 and list(runs.glob(".*.ckpt/checkpoint-*"))):
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert 2 <= finished() < len(tuning_trials), "the kill came too late to interrupt tuning"

    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = run_study(spec, progress=False)  # nothing left: read the outcome back
    assert resumed.steps_trained == 0
    reference = run_study(load_study(write_study(tmp_path / "ref", **_settings(changes))), progress=False)
    assert _chosen(resumed) == _chosen(reference)
    for got, ref in zip(resumed.trials + resumed.tuning, reference.trials + reference.tuning, strict=True):
        assert got.run_id == ref.run_id
        assert _metrics(got)["eval_loss"] == pytest.approx(_metrics(ref)["eval_loss"], abs=1e-5), got.label


def _settings(changes):
    return dict(tracks=ALPHAS, seeds=[0, 1], budget={"max_steps": 8}, **changes)


@pytest.mark.slow
def test_tuning_with_halving_chooses_the_full_grids_values_for_under_half_the_compute(tmp_path):
    """The benchmark (benchmarks/tuning.py) as a test: five learning rates x two configurations, 24 steps."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from tuning import compare  # benchmarks/tuning.py, not oneml.study.tune

    figures = compare(tmp_path)
    assert figures["full_chosen"] == figures["halving_chosen"] == {1: 1e-1, 64: 1e-2}
    assert figures["full_tuning_steps"] == 2 * 5 * 24
    assert figures["halving_tuning_steps"] == 2 * (5 * 8 + 1 * 16)  # rungs at 8 and 24 keep 5 -> 1 candidates
    assert figures["steps_ratio"] <= 0.5
