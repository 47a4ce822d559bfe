"""A study end to end on tiny-llama: every executor, skipping finished runs, a broken trial failing alone."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from studykit import write_study

from oneml.analysis.results import load_study as load_results
from oneml.study import expand, load_study
from oneml.study.executors import ExecutorOptions
from oneml.study.run import run_study, study_status
from oneml.tracking import resolve_tracking_uri

BROKEN = {"base": {"data": {"dataset": "/nonexistent/rows.json"}}, "grid": {"method.r": [4]}}


def _final(spec) -> dict[str, float]:
    root = expand(spec)[0].config.tracking.root
    out = {}
    for t in expand(spec):
        path = f"{root}/runs/{t.run_id}/metrics.json"
        out[t.run_id] = json.loads(open(path).read())["eval_loss"]
    return out


def _uri(tmp_path):
    return resolve_tracking_uri(None, tmp_path / "root")


def test_sequential_study_skips_finished_and_isolates_failure(tmp_path):
    tiny = load_study(write_study(tmp_path))
    main = tiny.tracks["main"].model_dump()
    spec = load_study(write_study(tmp_path, tracks={"main": main, "broken": BROKEN}))
    result = run_study(spec, progress=False)
    states = list(result.states.values())
    assert states.count("finished") == 8 and states.count("failed") == 2
    assert result.steps_trained == 8 * 4
    failed = [r for r in study_status(spec) if r["state"] == "failed"]
    assert all("nonexistent" in r["reason"] for r in failed)

    again = run_study(spec, progress=False)
    assert again.steps_trained == 0  # finished runs are not repeated; the broken ones fail again at once

    client = MlflowClient(_uri(tmp_path))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.`oneml.study` = 'tiny'")
    parents = [r for r in runs if r.data.tags.get("oneml.study_parent") == "true"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r not in parents]
    assert {r.data.tags["mlflow.parentRunId"] for r in children if r.info.status == "FINISHED"} == {
        parents[0].info.run_id
    }
    assert sum(r.info.status == "FINISHED" for r in children) == 8
    assert all("nonexistent" in r.data.tags["oneml.failure"] for r in children if r.info.status == "FAILED")

    report = load_results("tiny", _uri(tmp_path), artifacts=False)
    finished = [c for c in report.configs if c.runs]
    assert len(finished) == 4 and all(len(c.runs) == 2 and not c.failed for c in finished)
    # The broken configuration is in the guide as what it is: 2 of 2 runs failed (stability counts them).
    [broken] = [c for c in report.configs if not c.runs]
    assert len(broken.failed) == 2 and broken.method == "lora" and broken.dataset == "/nonexistent/rows.json"
    _report_opens_in_a_browser(tmp_path)
    _final(load_study(write_study(tmp_path)))  # every finished run is published with its metrics


@pytest.mark.slow
def test_workers_and_ray_give_the_same_results(tmp_path):
    ref = load_study(write_study(tmp_path / "seq"))
    run_study(ref, progress=False)
    expected = _final(ref)
    for name, executor, options in [("workers", "local", ExecutorOptions(workers=2)), ("ray", "ray", None)]:
        spec = load_study(write_study(tmp_path / name))
        result = run_study(spec, executor, options or ExecutorOptions(workers=2), progress=False)
        assert set(result.states.values()) == {"finished"}, name
        got = _final(spec)
        assert got.keys() == expected.keys()
        for run_id, loss in expected.items():
            assert got[run_id] == pytest.approx(loss, abs=1e-4), (name, run_id)


def _report_opens_in_a_browser(tmp_path):
    """The decision report of this real tiny-model study, as headless Chromium shows it."""
    import re

    from browser import CHROMIUM, chromium, console_messages
    from oneml.analysis import write_report

    files = write_report([load_results("tiny", _uri(tmp_path))], tmp_path / "report")
    html = files["report.html"]
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium (.ci/run installs it)")
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,3000", html.as_uri())
    assert shot.is_file() and shot.stat().st_size > 20_000
    dom = chromium(tmp_path, "--dump-dom", html.as_uri())
    assert not console_messages(dom.stderr)
    rows = re.search(r'<table class="decision" id="table-decision">.*?<tbody>(.*?)</tbody>', dom.stdout, re.S)
    assert rows and len(re.findall(r"<tr", rows.group(1))) == 7
    for key in ("convergence", "bars", "stability", "pareto"):
        body = re.search(rf'<figure id="figure-{key}" data-state="data">.*?</figure>', dom.stdout, re.S)
        assert body and "<svg" in body.group(0), key
