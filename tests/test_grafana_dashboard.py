"""deploy/grafana/oneml.json: a Grafana dashboard that Grafana can import (its structure, its panels' layout and
queries, its variables), whose every query names only metrics oneml exports, and covers what a run and a study
export. Its PromQL is parsed by Prometheus' own promtool; tests/test_monitoring.py runs the queries on a live run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from oneml.monitoring import EXPORTED

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "oneml.json"
PANEL_TYPES = {"timeseries", "stat", "bargauge", "table", "gauge", "text", "row"}
METRIC = re.compile(r"\b(oneml_[a-z_]+)\b")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(board: dict | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target."""
    return [(p["title"], t["expr"]) for p in (board or dashboard())["panels"] for t in p.get("targets", [])]


def substituted(expr: str, study: str = ".*", run_id: str = ".*") -> str:
    """The query as Grafana sends it with "All" (or one run) selected."""
    return expr.replace("$study", study).replace("$run_id", run_id)


def test_the_dashboard_is_importable_grafana_json():
    board = dashboard()
    for key, kind in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list), ("templating", dict)):
        assert isinstance(board.get(key), kind), key
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    boxes = set()
    for panel in board["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        g = panel["gridPos"]
        assert all(isinstance(g[k], int) and g[k] >= 0 for k in "xywh") and g["w"] >= 1 and g["x"] + g["w"] <= 24
        cells = {(g["y"] + dy, g["x"] + dx) for dy in range(g["h"]) for dx in range(g["w"])}
        assert not cells & boxes, f"panel {panel['title']!r} overlaps another"
        boxes |= cells
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        assert all(t["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for t in panel["targets"])


def test_every_query_names_only_metrics_oneml_exports():
    for title, expr in queries():
        names = METRIC.findall(expr)
        assert names, f"{title}: {expr} reads no oneml metric"
        unknown = sorted(set(names) - set(EXPORTED))
        assert not unknown, f"{title}: {unknown} are not exported (oneml.monitoring.EXPORTED)"


def test_the_dashboard_shows_every_exported_metric_and_defines_its_variables():
    board = dashboard()
    shown = {name for _, expr in queries(board) for name in METRIC.findall(expr)}
    assert shown == set(EXPORTED)
    defined = {v["name"] for v in board["templating"]["list"]}
    used = set(re.findall(r"\$\{?(\w+)", json.dumps(board["panels"])))
    assert used <= defined and {"datasource", "study", "run_id"} <= defined
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert set(METRIC.findall(variable["definition"])) <= set(EXPORTED)


def test_promtool_parses_every_query(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian's prometheus package) is not installed")
    rules = [{"record": f"oneml:panel_{i}", "expr": substituted(expr)} for i, (_, expr) in enumerate(queries())]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "a:b", "expr": "sum by (x"}]}]}))
    assert subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True, timeout=60).returncode != 0
