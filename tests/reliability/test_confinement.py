"""Names that come from configs never make oneml write outside its run root.

Where oneml writes a file whose name derives from user input: the study journal (<root>/studies/<study name>/),
the report folder (<root>/reports/<study names>, sanitized in analysis/report.py) and diagnostics files
(<run>/diagnostics/<name>). Everything else is named by a hash (run ids) or a fixed name; run names,
experiment names and tags only ever reach the MLflow store as values.
"""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from reliakit import tiny, tree, write_study

from oneml import OnemlError, train
from oneml.paths import confined
from oneml.tracking import resolve_tracking_uri

HOSTILE = ["..", "../escape", "a/../../b", "/etc/passwd", "..\\x", ".hidden", "", "a\0b"]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_name_that_would_leave_its_folder_is_refused(tmp_path, name):
    with pytest.raises(OnemlError, match=r"^field: .* must be a plain file name"):
        confined(tmp_path, name, "field")


def test_a_plain_name_stays_in_its_folder(tmp_path):
    assert confined(tmp_path, "kappa.json", "field") == tmp_path / "kappa.json"


def test_hostile_run_experiment_and_tag_names_write_nothing_outside_the_root(tmp_path):
    root = tmp_path / "root"
    cfg = tiny(
        root,
        "train.max_steps=2",
        "train.eval_before=false",
        "tracking.run_name=../../escaped-run",
        "tracking.experiment=../../escaped-experiment",
        "tracking.tags={oneml.study: ../../escaped-study, ../escaped-tag: ../../x}",
    )
    train(cfg, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["root"]  # nothing beside the root
    assert not [p for p in tree(tmp_path) if "escaped" in p]  # no file or folder took any of the names
    # the store, its creation lock (tracking/store.py), the artifacts and the runs: nothing else
    assert sorted(p.name for p in root.iterdir()) == ["artifacts", "mlflow.db", "mlflow.db.lock", "runs"]
    client = MlflowClient(resolve_tracking_uri(None, root))  # the names are kept, as values in the store
    (run,) = client.search_runs([client.get_experiment_by_name("../../escaped-experiment").experiment_id])
    assert run.info.run_name == "../../escaped-run" and run.data.tags["../escaped-tag"] == "../../x"


def test_diagnostics_names_are_confined_to_the_diagnostics_folder(tmp_path):
    from oneml.train.context import Sink

    sink = Sink()
    sink.attach(recorder=type("R", (), {"log_metrics": lambda *a: None})(), folder=tmp_path / "diagnostics")
    sink.log_json("kappa.json", {"ok": 1})
    with pytest.raises(OnemlError, match="diagnostics: '../../evil.json'"):
        sink.log_json("../../evil.json", {"bad": 1})
    assert tree(tmp_path) == ["diagnostics", "diagnostics/kappa.json"]


@pytest.mark.parametrize("name", ["..", ".", "../up", "a/b", ".hidden"])
def test_a_study_name_that_would_leave_its_folder_is_refused_at_load(tmp_path, name):
    from oneml.study import load_study

    with pytest.raises(OnemlError, match=r"study.yaml: name: String should match pattern"):
        load_study(write_study(tmp_path, name=name))
