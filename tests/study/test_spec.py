"""Spec loading and expansion: every trial validated up front, errors on one line naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from studykit import ROOT, write_study

from oneml import OnemlError
from oneml.cli import main
from oneml.config import load_run_config
from oneml.study import expand, load_study
from oneml.study.executors import ExecutorOptions, _worker_env
from oneml.study.halving import rungs
from oneml.study.run import run_study
from oneml.study.trial import GPU_FRACTION_ENV

CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_validates(path: Path):
    if "studies" in path.parts:
        assert expand(load_study(path))
    else:
        load_run_config(path)


def test_expansion_tags_seeds_and_budget(study_file):
    trials = expand(load_study(study_file))
    assert len(trials) == 8
    assert len({t.run_id for t in trials}) == 8
    assert len({t.config.config_id for t in trials}) == 4  # seeds share a configuration
    t = trials[-1]
    assert t.config.train.seed == 1 and t.config.train.max_steps == 4 and t.config.train.save_steps == 2
    assert t.config.method.r == 8 and t.config.train.learning_rate == 1e-2
    assert t.config.tracking.tags == {
        "oneml.study": "tiny",
        "oneml.track": "main",
        "oneml.grid.method.r": "8",
        "oneml.grid.train.learning_rate": "0.01",
    }


def test_track_base_overrides_and_whole_sections(tmp_path):
    tracks = {"v": {"base": {"train": {"batch_size": 2}}, "grid": {"method": [{"name": "lora", "r": 2}]}}}
    (t,) = expand(load_study(write_study(tmp_path, tracks=tracks, seeds=[3])))
    assert t.config.train.batch_size == 2 and t.config.method.r == 2 and t.config.train.seed == 3
    assert t.config.tracking.tags["oneml.grid.method"] == "name=lora,r=2"


def test_run_id_does_not_depend_on_tags(study_file):
    t = expand(load_study(study_file))[0]
    tags = {**t.config.tracking.tags, "mlflow.parentRunId": "x"}
    other = t.config.model_copy(update={"tracking": t.config.tracking.model_copy(update={"tags": tags})})
    assert other.run_id == t.run_id


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"tracks": {"main": {"grid": {"method.r": [4, 0]}}}}, "method.r"),
        ({"tracks": {"main": {"grid": {"train.nope": [1]}}}}, "train.nope"),
        ({"tracks": {"main": {"grid": {"method.r": []}}}}, "method.r"),
        ({"seeds": []}, "seeds"),
        ({"budget": {"max_steps": 0}}, "budget.max_steps"),
        ({"halving": {"min_steps": 8, "eta": 2}}, "halving.min_steps"),
        ({"colour": "red"}, "colour"),
        ({"margin": "0%"}, "margin: must be a positive percentage"),
        ({"margin": {"rel": 1}}, "margin: expected {relative: 0.01}"),
    ],
)
def test_errors_are_one_line_and_name_the_field(tmp_path, changes, needle):
    with pytest.raises(OnemlError) as err:
        expand(load_study(write_study(tmp_path, **changes)))
    assert "\n" not in str(err.value) and needle in str(err.value)


def test_cli_error_exits_2(tmp_path):
    path = write_study(tmp_path, tracks={"main": {"grid": {"method.r": [-1]}}})
    proc = subprocess.run([sys.executable, "-m", "oneml", "study", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "method.r" in proc.stderr
    assert not (tmp_path / "root" / "runs").exists() or not any((tmp_path / "root" / "runs").iterdir())


def test_margin_is_recorded_for_the_report(tmp_path):
    from oneml.analysis.decision import MARGIN_TAG
    from oneml.study.run import _Tracker

    spec = load_study(write_study(tmp_path, margin="2.5%"))
    tracker = _Tracker(spec, expand(spec)[0])
    assert tracker.client.get_run(tracker.parent_id).data.tags[MARGIN_TAG] == "2.5%"


def test_rungs():
    assert rungs(2, 2, 8) == [2, 4, 8]
    assert rungs(1, 3, 10) == [1, 3, 9, 10]


def test_duplicate_trials_rejected(tmp_path):
    path = write_study(tmp_path, tracks={"main": {"grid": {"method.r": [4, 4]}}})
    with pytest.raises(OnemlError, match="same run config"):
        expand(load_study(path))


def test_example_yaml_is_plain_data():
    seeds = yaml.safe_load((ROOT / "configs" / "studies" / "paper.yaml").read_text())["seeds"]
    assert seeds == {"initial": 3, "max": 10, "until": "decided"}


def test_unknown_executor_is_one_line(tmp_path):
    with pytest.raises(OnemlError) as err:
        load_study(write_study(tmp_path, executor={"name": "slurm"}))
    assert "executor.name" in str(err.value) and "local" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(OnemlError, match="slurm"):
        run_study(load_study(write_study(tmp_path)), "slurm", progress=False)


def test_status_before_running(tmp_path, capsys):
    main(["study", "status", str(write_study(tmp_path))])
    assert "pending 8" in capsys.readouterr().out


def test_worker_env_shares_cores_and_gpu(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = _worker_env(ExecutorOptions(workers=2, gpu_fraction=0.5), gpu="3")
    assert env[GPU_FRACTION_ENV] == "0.5" and int(env["OMP_NUM_THREADS"]) >= 1
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["ONEML_CONCURRENT_TRIALS"] == "2"


def test_where_a_study_records(tmp_path, monkeypatch):
    """--tracking-uri > the YAML's tracking.uri (base, or a track's base) > $MLFLOW_TRACKING_URI > sqlite under
    the root; where a result is recorded never changes a run id."""
    from oneml.study.spec import with_tracking_uri
    from oneml.tracking import resolve_tracking_uri

    tracks = {
        "a": {"grid": {"method.r": [4]}},
        "b": {"grid": {"method.r": [8]}, "base": {"tracking": {"uri": "sqlite:///b.db"}}},
    }
    spec = load_study(write_study(tmp_path, tracks=tracks))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    plain = {t.track: t for t in expand(spec)}
    root = tmp_path / "root"
    assert resolve_tracking_uri(plain["a"].config.tracking.uri, root) == "http://env:5000"
    assert resolve_tracking_uri(plain["b"].config.tracking.uri, root) == "sqlite:///b.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri(plain["a"].config.tracking.uri, root) == f"sqlite:///{root.resolve() / 'mlflow.db'}"
    pointed = {t.track: t for t in expand(with_tracking_uri(spec, "http://option:5000"))}
    assert {t.config.tracking.uri for t in pointed.values()} == {"http://option:5000"}
    assert {k: t.run_id for k, t in pointed.items()} == {k: t.run_id for k, t in plain.items()}
    assert with_tracking_uri(spec, None) is spec
