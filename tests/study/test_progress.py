"""The study's progress view: a live bar in a terminal, one line per trial event anywhere else (a log file)."""

from __future__ import annotations

import io

from rich.console import Console
from studykit import write_study

from oneml.study import expand, load_study
from oneml.study.progress import StudyProgress


def _view(tmp_path, terminal: bool) -> tuple[StudyProgress, io.StringIO, list]:
    trials = expand(load_study(write_study(tmp_path)))
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=200)
    return StudyProgress(trials, console), out, trials


def test_a_log_file_gets_a_line_per_trial_started_and_ended(tmp_path):
    view, out, trials = _view(tmp_path, terminal=False)
    with view:
        view.started(trials[0].label)
        view.finished(trials[0].label, "finished")
        view.started(trials[1].label)
        view.finished(trials[1].label, "failed")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(f"study {len(trials)} trials, 0 already done")
    assert lines[1].endswith(f"study started {trials[0].label}")
    assert f"study finished {trials[0].label} [1/{len(trials)}: done 1  running 0" in lines[2]
    assert f"study failed {trials[1].label} [2/{len(trials)}: done 1  running 0  failed 1" in lines[4]
    assert len(lines) == 5


def test_a_terminal_gets_the_live_bar_not_lines(tmp_path):
    view, out, trials = _view(tmp_path, terminal=True)
    with view:
        view.started(trials[0].label)
        view.finished(trials[0].label, "finished")
    assert "study started" not in out.getvalue()
    assert f"1/{len(trials)}" in out.getvalue()  # the bar's own count
