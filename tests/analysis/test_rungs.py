"""The rung table and the halving note, from a synthetic store whose rungs have a known answer.

Study ``halving-demo`` (eval_loss, eta 3, rungs at 10 and 30): six LoRA ranks x two seeds. At step 10, r=8 and
r=4 are best and go on; r=128 has the best single value but a failed seed, which sinks it. At step 30, r=8 beats
r=4 and is the only survivor. Study ``plain`` has a parent run but no halving; ``halving-acc`` ranks by token
accuracy (higher is better).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from scipy import stats
from synthetic import StudyWriter

from oneml.analysis.results import load_study
from oneml.analysis.rungs import halving_note, halving_tags, rung_table, rung_tags

NAN = float("nan")
RUNG_10 = {"4": (1.50, 1.52), "8": (1.40, 1.44), "16": (1.60, 1.62), "32": (1.70, 1.70), "64": (1.80, 1.84)}
RUNG_10 |= {"128": (1.30, NAN)}
RUNG_30 = {"8": (1.30, 1.32), "4": (1.35, 1.37)}
ORDER_10 = ["8", "4", "16", "32", "64", "128"]


def _write(writer: StudyWriter, study: str, metric: str) -> None:
    writer.run({"oneml.study": study, "oneml.study_parent": "true"} | halving_tags(10, 3, metric, [10, 30]), {})
    for r, values in RUNG_10.items():
        for seed, value in enumerate(values):
            tags = {"oneml.study": study, "oneml.track": "main", "oneml.grid.method.r": r, "oneml.method": "lora"}
            tags |= {"oneml.config_id": f"cfg-r{r}", "oneml.seed": str(seed), "oneml.run_id": f"r{r}-s{seed}"}
            rank = ORDER_10.index(r) + 1
            tags |= rung_tags(10, value, rank, 6, rank <= 2)
            if r in RUNG_30:
                tags |= rung_tags(30, RUNG_30[r][seed], 1 if r == "8" else 2, 2, r == "8")
            if r == "8":
                writer.run(tags, {"eval_loss": 1.2 + 0.01 * seed})
                continue
            tags |= {"oneml.pruned": "true", "oneml.pruned_reason": "rung ..."}
            if math.isnan(value):
                tags["oneml.failure"] = "RuntimeError: loss is NaN"
            writer.run(tags, {}, status="KILLED")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    writer = StudyWriter(tmp_path_factory.mktemp("rungs") / "oneml-runs")
    _write(writer, "halving-demo", "eval_loss")
    _write(writer, "halving-acc", "eval_token_accuracy")
    writer.run({"oneml.study": "plain", "oneml.study_parent": "true"}, {})
    writer.run({"oneml.study": "plain", "oneml.config_id": "c", "oneml.method": "lora"}, {"eval_loss": 1.0})
    return {name: load_study(name, writer.uri) for name in ("halving-demo", "halving-acc", "plain")}


def _interval(values: tuple[float, ...]) -> str:
    n, mean = len(values), sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return f"{mean:.4f} [{mean - half:.4f}, {mean + half:.4f}]"


def test_rung_table_lists_every_rung_with_means_intervals_and_decisions(studies):
    table = rung_table(studies["halving-demo"])
    assert table is not None and table.key == "rungs"
    assert table.columns == ["rung", "step", "configuration", "eval loss mean [95% CI]", "n", "rank", "decision"]
    first, second = table.rows[:6], table.rows[6:]
    assert [row[:3] for row in first] == [["0", "10", f"lora r={r}"] for r in ORDER_10]
    assert [row[:3] for row in second] == [["1", "30", "lora r=8"], ["1", "30", "lora r=4"]]
    by_rung = {(row[1], row[2]): row for row in table.rows}
    assert by_rung["10", "lora r=8"][3:] == [_interval(RUNG_10["8"]), "2", "1 of 6", "kept"]
    assert by_rung["10", "lora r=32"][3] == "1.7000 [1.7000, 1.7000]"  # identical seeds: a zero-width interval
    assert by_rung["10", "lora r=128"][3:] == ["1.3000", "1 (1 failed)", "6 of 6", "pruned"]  # n=1: no interval
    assert by_rung["30", "lora r=4"][3:] == [_interval(RUNG_30["4"]), "2", "2 of 2", "pruned"]
    assert table.classes == ["contender", "contender"] + ["worse"] * 4 + ["contender", "worse"]
    assert "lower is better" in table.caption and "1/3" in table.caption


def test_halving_note_says_the_survivors_were_selected_on_the_reported_rows(studies):
    assert halving_note(studies["halving-demo"]) == (
        "Successive halving (eta 3, rungs at steps 10, 30; ranked by eval loss, lower is better) pruned 5 of 6 "
        "configurations: the final comparison is among the survivors, selected on the same validation rows it is "
        "reported on."
    )
    assert "ranked by token accuracy, higher is better" in halving_note(studies["halving-acc"])
    assert "higher is better" in rung_table(studies["halving-acc"]).caption


def test_nothing_without_halving(studies):
    assert rung_table(studies["plain"]) is None and halving_note(studies["plain"]) is None
    no_rungs = replace(studies["plain"], parent_tags=halving_tags(10, 3, "eval_loss", []))  # budget before rung 1
    assert rung_table(no_rungs) is None and halving_note(no_rungs) is None


def test_tags_round_trip_values_exactly():
    tags = rung_tags(30, 1.2345678901234567, 2, 5, False)
    assert tags == {
        "oneml.rung.30.value": "1.2345678901234567",
        "oneml.rung.30.rank": "2",
        "oneml.rung.30.of": "5",
        "oneml.rung.30.decision": "pruned",
    }
    assert rung_tags(10, NAN, 6, 6, False)["oneml.rung.10.value"] == "nan"
    assert halving_tags(2, 2, "eval_loss", [2, 4])["oneml.halving.rungs"] == "2,4"


def test_the_report_shows_the_rungs_and_says_how_survivors_were_chosen(studies, tmp_path):
    from oneml.analysis.report import write_report

    write_report([studies["halving-demo"]], tmp_path / "r")
    md, html = (tmp_path / "r" / "report.md").read_text(), (tmp_path / "r" / "report.html").read_text()
    for text in (md, html):
        assert "Successive halving (eta 3" in text and "selected on the same validation rows" in text
    assert 'id="table-rungs"' in html and md.count("| 0 | 10 |") == 6  # every configuration at rung 0
    write_report([studies["plain"]], tmp_path / "p")
    assert "Successive halving" not in (tmp_path / "p" / "report.md").read_text()
