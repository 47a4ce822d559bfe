"""Sequential seeds on tiny-llama: a clear case stops at its first look, a close one continues to max, seeds added
by hand (`oneml study extend`) to a seed list or as one more look, a kill -9 in the middle of a round resumes to
the uninterrupted result; and the bad inputs, refused at load in one line before anything is recorded."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console
from studykit import write_study

from clikit import run_cli
from oneml.analysis import DecisionOptions, analyse_study, decision_table
from oneml.analysis import load_study as load_results
from oneml.analysis.sequential import look_alpha
from oneml.errors import OnemlError
from oneml.study import expand, load_study
from oneml.study.run import run_study
from oneml.study.sequential import extend_study, journal_path, planned_trials, read_plan
from oneml.tracking import resolve_tracking_uri

# lr 1e-2 trains visibly in 4 steps, 1e-4 hardly: ~0.1 apart in eval loss at a paired sd of ~0.01.
CLEAR = dict(tracks={"main": {"grid": {"train.learning_rate": [1.0e-2, 1.0e-4], "method.r": [4]}}}, margin="1%")
# r=4 and r=8 at the same learning rate: within ~0.001 of each other, about the spread; a 0.1% margin (0.0055).
CLOSE = dict(tracks={"main": {"grid": {"train.learning_rate": [1.0e-2], "method.r": [4, 8]}}}, margin="0.1%")


def _uri(tmp_path):
    return resolve_tracking_uri(None, tmp_path / "root")


def _parent_tags(tmp_path, name="tiny") -> dict[str, str]:
    client = MlflowClient(_uri(tmp_path))
    query = f"tags.`oneml.study` = '{name}' and tags.`oneml.study_parent` = 'true'"
    (parent,) = client.search_runs([e.experiment_id for e in client.search_experiments()], query)
    return parent.data.tags


def _bad(tmp_path, **changes) -> str:
    with pytest.raises(OnemlError) as err:
        load_study(write_study(tmp_path, **changes))
    return str(err.value).split(": ", 1)[1]


def test_bad_sequential_seeds_are_refused_at_load_in_one_line(tmp_path, capsys):
    seeds = {"initial": 3, "max": 10, "until": "decided"}
    assert _bad(tmp_path, seeds=seeds) == "seeds.until: 'decided' needs margin: (e.g. margin: 1%)"
    assert (
        _bad(tmp_path, seeds={"initial": 5, "max": 3}, margin="1%")
        == "seeds.initial: must be at most seeds.max (3), got 5"
    )
    assert _bad(tmp_path, seeds={"initial": 1, "max": 3}, margin="1%").startswith("seeds.initial: must be at least 2")
    assert _bad(tmp_path, seeds={"initial": 2, "max": 3, "step": 0}, margin="1%").startswith("seeds.step:")
    assert _bad(tmp_path, seeds={"initial": 2, "max": 3, "until": "max"}, margin="1%").startswith("seeds.until:")
    halving = {"min_steps": 2, "eta": 2}
    assert _bad(tmp_path, seeds={"initial": 2, "max": 3}, margin="1%", halving=halving).startswith("seeds: sequential")
    path = write_study(tmp_path, seeds=seeds)
    code, _, err = run_cli(capsys, "study", "run", str(path), "--quiet")
    assert code == 2 and err.strip().count("\n") == 0 and "seeds.until: 'decided' needs margin:" in err
    assert not (tmp_path / "root").exists()  # nothing ran, nothing was recorded


def test_a_seed_list_keeps_its_run_ids_and_the_first_round_is_the_same_trials(tmp_path):
    listed = expand(load_study(write_study(tmp_path / "a", seeds=[0, 1, 2])))
    rounds = expand(load_study(write_study(tmp_path / "b", seeds={"initial": 3, "max": 6}, margin="1%")))
    assert [t.run_id for t in listed] == [t.run_id for t in rounds]  # the folder is not part of a run id
    spec = load_study(write_study(tmp_path / "c", seeds={"initial": 2, "max": 6, "start": 10}, margin="1%"))
    assert sorted({t.seed for t in expand(spec)}) == [10, 11]


def test_a_clear_case_stops_at_its_first_look_and_extend_adds_looks(tmp_path):
    spec = load_study(write_study(tmp_path, seeds={"initial": 3, "max": 5, "until": "decided"}, **CLEAR))
    shown = Console(file=io.StringIO(), width=200)
    result = run_study(spec, console=shown, progress=True)
    assert result.stopped == "decided" and [e["seeds"] for e in result.looks] == [3]
    assert len(result.trials) == 6 and result.steps_trained == 6 * 4  # 6 of the 10 runs a fixed design would train
    text = shown.file.getvalue()
    assert "round 1 (look 1 of up to 3): every configuration at 3 seeds" in text
    assert "look 1 at 3 seeds (alpha share 0.011): stopped (decided)" in text
    tags = _parent_tags(tmp_path)
    assert tags["oneml.sequential.looks"] == "3" and tags["oneml.sequential.max"] == "5"
    assert tags["oneml.sequential.stopped"] == "decided" and tags["oneml.study.finished"] == "6"
    (a,) = analyse_study(load_results("tiny", _uri(tmp_path)), DecisionOptions())
    assert a.options.alpha == pytest.approx(look_alpha(tags, 0.05)[0])  # the report judges at the look's share
    performance = next(r for r in decision_table(a) if r.priority == "performance")
    assert performance.decided and "learning_rate=0.01" in performance.winner

    again = run_study(spec, progress=False)  # the rounds are over: nothing runs, the same look stands
    assert again.steps_trained == 0 and [e["seeds"] for e in again.looks] == [3]

    extended = extend_study(spec, 1, progress=False)
    assert extended.steps_trained == 2 * 4  # seed 3 of both configurations
    assert _parent_tags(tmp_path)["oneml.sequential.looks"] == "3,4"
    assert read_plan(spec, expand(spec)[0])["looks"][-1]["extended"] == 1
    assert sorted(t.seed for t in planned_trials(spec)) == [0, 0, 1, 1, 2, 2, 3, 3]
    extend_study(spec, 1, progress=False)
    with pytest.raises(OnemlError, match=r"seeds.max \(5\).*alpha is spent.*replicate"):
        extend_study(spec, 1, progress=False)
    moved = load_study(write_study(tmp_path, seeds={"initial": 3, "max": 8, "until": "decided"}, **CLEAR))
    with pytest.raises(OnemlError, match=r"ran its rounds with \{initial: 3, max: 5, start: 0\}"):
        run_study(moved, progress=False)  # the spent alpha was computed with max 5


def test_a_close_case_continues_to_max(tmp_path, capsys):
    path = write_study(tmp_path, seeds={"initial": 2, "max": 4, "until": "decided"}, **CLOSE)
    code, out, err = run_cli(capsys, "study", "run", str(path), "--quiet")
    assert code == 0, err
    plan = read_plan(load_study(path), expand(load_study(path))[0])
    looks = [e["seeds"] for e in plan["looks"]]
    assert looks[0] == 2 and looks[-1] == 4 and len(looks) >= 2 and plan["stopped"] == "max"  # 2 -> 4 here
    assert f"sequential seeds: {len(looks)} look(s) at {','.join(map(str, looks))} seeds, stopped: max" in out
    assert "finished 8" in out  # the status table lists every trial the rounds ran
    assert _parent_tags(tmp_path)["oneml.sequential.looks"] == ",".join(map(str, looks))


def test_extend_a_seed_list(tmp_path, capsys):
    one = {"tracks": {"main": {"grid": {"method.r": [4], "train.learning_rate": [1.0e-2]}}}, "seeds": [0, 1]}
    path = write_study(tmp_path, **one)
    spec = load_study(path)
    run_study(spec, progress=False)
    code, out, err = run_cli(capsys, "study", "extend", str(path), "--seeds", "1", "--quiet")
    assert code == 0, err
    assert "steps trained this time: 4" in out and "finished 3" in out
    tags = _parent_tags(tmp_path)
    assert tags["oneml.study.extended"] == "2"
    assert "seeds 2 were added by hand" in look_alpha(tags, 0.05)[1]
    # An extension that was interrupted: the same command finishes it; another count is refused.
    plan = json.loads(journal_path(spec, expand(spec)[0]).read_text())
    plan["pending"] = {"add": 1, "seeds": [3]}
    journal_path(spec, expand(spec)[0]).write_text(json.dumps(plan))
    code, _, err = run_cli(capsys, "study", "extend", str(path), "--seeds", "2", "--quiet")
    assert code == 2 and "did not finish" in err and "--seeds 1" in err
    code, out, err = run_cli(capsys, "study", "extend", str(path), "--seeds", "1", "--quiet")
    assert code == 0, err
    assert "steps trained this time: 4" in out and "finished 4" in out
    assert _parent_tags(tmp_path)["oneml.study.extended"] == "2,3"


def test_extend_refuses_bad_input_in_one_line(tmp_path, capsys):
    path = write_study(tmp_path)
    for argv, words in [
        ([str(tmp_path / "missing.yaml"), "--seeds", "1"], "config file not found"),
        ([str(path), "--seeds", "0"], "--seeds"),
        ([str(path), "--seeds", "x"], "--seeds"),
        ([str(path), "--seeds", "1"], "no finished run to extend"),
    ]:
        code, _, err = run_cli(capsys, "study", "extend", *argv)
        assert code == 2 and words in err and err.strip().count("\n") == 0, (argv, err)
    assert not (tmp_path / "root").exists()


def _round_two_checkpoint(spec, runs) -> bool:
    """A trial of round 2 (seed index 2) has written a checkpoint: the driver is in the middle of that round."""
    return any(list(runs.glob(f".{t.run_id}.ckpt/checkpoint-*")) for t in planned_trials(spec) or [] if t.seed == 2)


@pytest.mark.slow
def test_killed_in_the_middle_of_a_round_resumes_to_the_uninterrupted_result(tmp_path):
    changes = dict(CLOSE, seeds={"initial": 2, "max": 4, "until": "decided"}, budget={"max_steps": 8}, save_steps=2)
    path = write_study(tmp_path, **changes)
    spec = load_study(path)
    runs = tmp_path / "root" / "runs"
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "oneml", "study", "run", str(path), "--quiet"]
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None and not _round_two_checkpoint(spec, runs):
        time.sleep(0.05)
    assert driver.poll() is None, "the study ended before round 2 was under way"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    plan = read_plan(spec, expand(spec)[0])
    assert len(plan["looks"]) == 1 and not plan["stopped"]  # killed during the second round

    resumed = run_study(spec, progress=False)
    reference = run_study(load_study(write_study(tmp_path / "ref", **changes)), progress=False)
    assert resumed.looks == reference.looks and resumed.stopped == reference.stopped
    assert resumed.steps_trained < reference.steps_trained  # round 1 and the checkpointed steps were not redone
    for t in planned_trials(spec):
        got = json.loads((runs / t.run_id / "metrics.json").read_text())["eval_loss"]
        ref = json.loads((tmp_path / "ref" / "root" / "runs" / t.run_id / "metrics.json").read_text())["eval_loss"]
        assert got == pytest.approx(ref, abs=1e-5), t.label
