"""The report's tuning section on a synthetic tuned study: tuning runs are in no configuration and not excluded,
the table shows each configuration's chosen value with every candidate's validation mean (pruned at its rung,
failed), the sensitivity figure has one line per configuration on a log axis, and the report says what was tuned."""

from __future__ import annotations

import json

import pytest
from synthetic import StudyWriter

from oneml.analysis.decision import DecisionOptions
from oneml.analysis.report import build_report, write_report
from oneml.analysis.results import load_study
from oneml.analysis.tuning import Candidate, Setup, Tuned, _profile, sensitivity, tune_tags, tuning_table

RATES = ["0.0001", "0.001", "0.01"]
# Per method: each candidate's (first-rung value, final value or None when pruned, status).
CANDIDATES = {
    "lora": {"0.0001": (2.4, None, "KILLED"), "0.001": (2.0, 1.80, "FINISHED"), "0.01": (2.2, None, "KILLED")},
    "dora": {"0.0001": (2.3, None, "KILLED"), "0.001": (2.5, None, "KILLED"), "0.01": (2.1, 1.70, "FINISHED")},
}
CHOSEN = {"lora": "0.001", "dora": "0.01"}


def _write(root) -> StudyWriter:
    w = StudyWriter(root)
    parent = {"oneml.study": "tuned", "oneml.study_parent": "true"}
    w.run(parent | tune_tags({"train.learning_rate": [1e-4, 1e-3, 1e-2]}, "eval_loss", [100], 30, (10, 3)), {})
    for method, candidates in CANDIDATES.items():
        common = {"oneml.study": "tuned", "oneml.track": "main", "oneml.grid.method.r": "8", "oneml.method": method}
        common |= {"oneml.model": "tiny-llama", "oneml.objective": "sft", "oneml.dataset": "alpaca-demo"}
        template, final = f"tpl-{method}", f"cfg-{method}"
        for i, (rate, (rung, value, status)) in enumerate(candidates.items()):
            tags = common | {"oneml.tuning": "true", "oneml.tuning.template": template, "oneml.seed": "100"}
            tags |= {"oneml.config_id": f"{method}-{i}", "oneml.tuning.value.train.learning_rate": rate}
            tags |= {"oneml.tuning.for": final, "oneml.tuning.chosen": str(rate == CHOSEN[method]).lower()}
            tags |= {"oneml.rung.10.value": repr(rung), "oneml.rung.10.decision": "kept" if value else "pruned"}
            tags |= {} if value else {"oneml.pruned": "true", "oneml.pruned_reason": "rung 0 (step 10)"}
            w.run(tags, {"eval_loss": value if value else rung}, status=status)
        for seed in (0, 1, 2):
            tags = common | {"oneml.config_id": final, "oneml.seed": str(seed), "oneml.tuning.template": template}
            tags |= {"oneml.tuned.train.learning_rate": CHOSEN[method]}
            w.run(tags, {"eval_loss": (1.75 if method == "lora" else 1.65) + 0.01 * seed})
    failed = common | {"oneml.tuning": "true", "oneml.tuning.template": "tpl-dora", "oneml.seed": "101"}
    failed |= {"oneml.config_id": "dora-1", "oneml.tuning.value.train.learning_rate": "0.001"}
    w.run(failed | {"oneml.failure": "diverged"}, {}, status="FAILED")  # a second tuning seed that diverged
    return w


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    w = _write(tmp_path_factory.mktemp("tuned") / "oneml-runs")
    return load_study("tuned", w.uri, artifacts=False)


def test_tuning_runs_are_in_no_configuration_and_not_excluded(tuned):
    assert sorted(c.label for c in tuned.configs) == ["dora r=8", "lora r=8"]
    assert all(len(c.runs) == 3 and not c.failed for c in tuned.configs)  # the diverged tuning run is no failure
    assert tuned.excluded == [] and len(tuned.tuning) == 7


def test_the_table_shows_each_chosen_value_and_every_candidate(tuned):
    table = tuning_table(tuned)
    assert table.columns[:3] == ["configuration", "chosen train.learning_rate", "eval loss (validation)"]
    assert table.rows == [
        ["dora r=8", "0.01", "1.7000", "0.0001: pruned (2.3000); 0.001: failed (1 seed); 0.01: 1.7000 ✓"],
        ["lora r=8", "0.001", "1.8000", "0.0001: pruned (2.4000); 0.001: 1.8000 ✓; 0.01: pruned (2.2000)"],
    ]
    assert "chosen on the validation rows" in table.caption and "first rung at step 10" in table.caption


def test_the_sensitivity_figure_has_a_line_per_configuration(tuned):
    figure = sensitivity(tuned)
    assert figure.key == "tuning-sensitivity" and figure.title == "Sensitivity to the tuned learning rate"
    assert "dora r=8" in figure.svg and "lora r=8" in figure.svg
    assert "at step 10, the first halving rung" in figure.caption
    assert "Flat lines = robust to the learning rate" in figure.caption


def test_the_report_has_the_tuning_section(tuned, tmp_path):
    report = build_report(tuned, DecisionOptions())
    assert report.tuning is not None and report.tuning_figure is not None
    note = next(w for w in report.warnings if "was tuned per configuration" in w)
    assert note.startswith("train.learning_rate was tuned per configuration on the validation rows (7 tuning runs")
    assert any("selection and comparison on the same rows" in w for w in report.warnings)
    write_report([tuned], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "### Tuning: each configuration's chosen value" in md and "figures/tuning-sensitivity.svg" in md
    assert (tmp_path / "report" / "figures" / "tuning-sensitivity.svg").is_file()
    runs = (tmp_path / "report" / "runs.csv").read_text()
    assert "tpl-" not in runs.split("\n")[0] and runs.count("\n") == 1 + 6  # the final runs only


def test_a_study_without_tuning_has_no_tuning_section(demo):
    assert tuning_table(demo) is None and sensitivity(demo) is None


def test_several_tuned_keys_plot_the_best_over_the_others():
    setup = Setup(["train.learning_rate", "method.loraplus_ratio"], "eval_loss", ["0"], 10, None)

    def c(rate, ratio, loss):
        return Candidate((rate, ratio), [loss], [], False, 0, False)

    t = Tuned("t", "loraplus", "main", "loraplus", [c("0.001", "4", 2.0), c("0.001", "16", 1.5), c("0.01", "4", 1.8)])
    assert _profile(t, 0, setup, higher=False) == [("0.001", 1.5), ("0.01", 1.8)]
    assert _profile(t, 1, setup, higher=False) == [("4", 1.8), ("16", 1.5)]
    assert json.loads(tune_tags({"k": [1, 2]}, "eval_loss", [0], 5, None)["oneml.tune.grid"]) == {"k": [1, 2]}
