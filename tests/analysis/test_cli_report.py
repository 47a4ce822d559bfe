"""`oneml report` and `oneml recommend` end to end on the synthetic store; errors are one line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clikit import run_cli
from oneml.analysis.decision import PRIORITIES


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def test_report_writes_into_the_default_folder(capsys, store):
    code, out, err = run_cli(capsys, "report", "methods-demo", "--root", str(store.root), "--weights", "memory=2")
    assert code == 0, err
    folder = store.root / "reports" / "methods-demo"
    assert (folder / "report.html").is_file() and str(folder / "report.html") in out
    assert "memory=2" in (folder / "report.html").read_text()


def test_report_compares_and_reads_experiments(capsys, store, tmp_path):
    code, _, err = run_cli(
        capsys, "report", "methods-demo", "--compare", "methods-demo-b", "--root", str(store.root),
        "--out", str(tmp_path / "cmp"),
    )  # fmt: skip
    assert code == 0, err
    assert "Comparison: methods-demo vs methods-demo-b" in (tmp_path / "cmp" / "report.html").read_text()
    code, _, err = run_cli(
        capsys, "report", "--experiment", "manual", "--root", str(store.root), "--out", str(tmp_path / "m")
    )
    assert code == 0, err
    assert "n=1 (no spread, no test) for: full" in (tmp_path / "m" / "report.html").read_text()


def test_recommend_prints_the_answer_and_why(capsys, store):
    code, out, err = run_cli(capsys, "recommend", "methods-demo", "--priority", "stability", "--root", str(store.root))
    assert code == 0, err
    assert "Production stability" in out and "dora r=8" in out and "why:" in out and "rule:" in out
    flat = " ".join(out.split())
    assert "no winner yet" in flat and "verdict: inconclusive" in flat and "seeds per configuration" in flat


def test_margin_changes_the_verdicts(capsys, store, tmp_path):
    """A 5% margin makes the close LoRAs equivalent to DoRA: the performance row is decided for dora r=8."""
    code, out, err = run_cli(capsys, "recommend", "methods-demo", "--margin", "5%", "--root", str(store.root))
    assert code == 0, err
    flat = " ".join(out.split())
    assert "verdict: decided" in flat
    code, _, err = run_cli(
        capsys, "report", "methods-demo", "--margin", "0.07", "--root", str(store.root), "--out", str(tmp_path / "m")
    )
    assert code == 0, err
    assert "Equivalence margin ±0.07 (0.07)" in (tmp_path / "m" / "report.html").read_text()


def test_recommend_help_lists_every_priority(capsys):
    code, out, _ = run_cli(capsys, "recommend", "--help")
    assert code == 0
    for name in PRIORITIES.names():
        assert name in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "nosuch"], "unknown study 'nosuch'; known: all-failed, methods-demo, methods-demo-b"),
        (["report", "all-failed"], "study 'all-failed': no finished runs to analyse"),
        (["recommend", "methods-demo", "--priority", "speedy"], "unknown priority 'speedy'"),
        (["report", "methods-demo", "--weights", "qualty=1"], "unknown criterion 'qualty'"),
        (["report", "methods-demo", "--metric", "bench/none"], "--metric: no finished run recorded 'bench/none'"),
        (["report", "methods-demo", "--margin", "0%"], "--margin: must be a positive percentage"),
        (["recommend", "methods-demo", "--margin", "abc"], "--margin: must be a positive percentage"),
    ],
)
def test_errors_are_one_line_with_exit_2(capsys, store, argv, message):
    code, _, err = run_cli(capsys, *argv, "--root", str(store.root))
    assert code == 2
    assert message in " ".join(err.split()) and "Traceback" not in err


def test_missing_store_is_an_error_and_creates_nothing(capsys, tmp_path):
    code, _, err = run_cli(capsys, "report", "x", "--root", str(tmp_path / "none"))
    assert code == 2 and "no runs recorded" in err and not (tmp_path / "none").exists()


def test_analysis_never_imports_torch(store, tmp_path):
    """Loading, deciding and writing a whole report must work where torch is absent."""
    script = (
        "import sys\n"
        "import oneml.analysis as a\n"
        "from pathlib import Path\n"
        f"study = a.load_study('methods-demo', {store.uri!r})\n"
        f"a.write_report([study], Path({str(tmp_path / 'r')!r}))\n"
        "import oneml.cli\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"]


def test_report_of_a_sequential_study_judges_at_its_last_look_unless_alpha_is_given(capsys, tmp_path):
    """`oneml report` passes no alpha unless --alpha is given, so a sequential study's guide uses its look's share."""
    from synthetic import Spec, StudyWriter

    from oneml.analysis.sequential import look_alpha, look_tags

    writer = StudyWriter(tmp_path / "oneml-runs")
    tags = look_tags([3, 5], 10, 0.05)
    writer.run({"oneml.study": "seq", "oneml.study_parent": "true"} | tags, {})
    for i, loss in enumerate((1.40, 1.45)):
        writer.config_runs("seq", Spec("lora", {"method.r": str(4 * (i + 1))}, loss, seeds=(0, 1, 2, 3, 4)), i)
    sentence = look_alpha(tags, 0.05)[1]
    code, _, err = run_cli(capsys, "report", "seq", "--root", str(writer.root), "--out", str(tmp_path / "r"))
    assert code == 0, err
    text = " ".join((tmp_path / "r" / "report.md").read_text().split())
    assert sentence in text and "as given instead" not in text
    code, _, err = run_cli(capsys, "report", "seq", "--alpha", "0.05", "--root", str(writer.root),
                           "--out", str(tmp_path / "g"))  # fmt: skip
    assert code == 0, err
    assert "as given instead" in (tmp_path / "g" / "report.md").read_text()
