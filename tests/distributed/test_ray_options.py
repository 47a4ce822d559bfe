"""Per-trial Ray reservations: from the study YAML, overridden by the command line, handed to ray.remote."""

from __future__ import annotations

import sys
import types

import pytest
from distkit import write_study

from clikit import run_cli
from oneml.study import load_study
from oneml.study.executors import ExecutorOptions, run_ray
from oneml.study.trial import Job


def test_study_settings_then_command_line(tmp_path):
    executor = {"name": "ray", "cpus_per_trial": 2, "gpu_fraction": 0.5, "resources": {"node_b": 1}}
    spec = load_study(write_study(tmp_path, executor=executor))
    options = ExecutorOptions.of(spec.executor)
    assert (options.cpus, options.gpu_fraction, options.resources) == (2, 0.5, {"node_b": 1})
    given = ExecutorOptions.of(spec.executor, cpus=0.5, resources={"big": 2.0}, gpu_fraction=None)
    assert (given.cpus, given.gpu_fraction, given.resources) == (0.5, 0.5, {"big": 2.0})


def test_reservations_reach_ray_remote(monkeypatch):
    seen = {}

    class Ref:
        pass

    def remote(**reserve):
        seen.update(reserve)

        def wrap(fn):
            return types.SimpleNamespace(remote=lambda *args: Ref())

        return wrap

    fake = types.SimpleNamespace(
        is_initialized=lambda: True,
        remote=remote,
        wait=lambda refs, num_returns, timeout=None: (refs[:1], refs[1:]),
        get=lambda ref: {"run_id": "r", "status": "finished", "metrics": {}, "reason": "", "steps_trained": 1},
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    done = []
    options = ExecutorOptions(cpus=0.5, gpu_fraction=0.33, resources={"node_b": 0.5})
    run_ray([Job({}, None, "a"), Job({}, None, "b")], options, lambda job: None, lambda job, out: done.append(out))
    assert seen == {"num_cpus": 0.5, "num_gpus": 0.33, "resources": {"node_b": 0.5}}
    assert len(done) == 2


@pytest.mark.parametrize("bad", ["node_b", "node_b=x", "=1", "node_b=0"])
def test_bad_resource_option_is_one_line(tmp_path, capsys, bad):
    spec = write_study(tmp_path)
    code, _, err = run_cli(capsys, "study", "run", str(spec), "--executor", "ray", "--resource", bad)
    assert code == 2 and f"--resource {bad!r}: expected NAME=AMOUNT" in err
    assert len(err.strip().splitlines()) == 1
