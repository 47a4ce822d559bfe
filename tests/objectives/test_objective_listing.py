"""What `oneml objectives` and the README's objective table show (objectives/listing.py): derived from the registry,
every objective once, its data kind, reference, result and keys with their choices, the methods it refuses; README.md
holds the generated table."""

from __future__ import annotations

import re
from pathlib import Path

from clikit import run_cli
from oneml.methods import OBJECTIVE_REFUSALS
from oneml.objectives import OBJECTIVES
from oneml.objectives.dpo import DPO_LOSS_TYPES
from oneml.objectives.listing import markdown, rows

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- objectives table", "<!-- end of objectives table -->"


def test_readme_holds_the_table_the_registry_generates():
    text = README.read_text()
    assert BEGIN in text and END in text, "README.md lost the objectives table markers"
    block = text.split(BEGIN, 1)[1].split("-->", 1)[1].split(END, 1)[0]
    assert block.strip() == markdown().strip(), "README.md drifted from the registry: run `oneml objectives --markdown`"


def test_every_objective_is_listed_once_with_what_it_needs():
    listed = {r.name: r for r in rows()}
    assert sorted(listed) == sorted(OBJECTIVES.names())
    assert listed["kto"].data.startswith("answers labelled desirable") and listed["kto"].reference != "none"
    assert listed["reward"].result.startswith("reward model") and listed["simpo"].reference == "none"
    assert f"loss_type: {' | '.join(DPO_LOSS_TYPES)}" in listed["dpo"].keys  # the choices a str key does not list
    assert "reference: auto | adapter | copy | precomputed" in listed["dpo"].keys and "lambda" in listed["orpo"].keys
    for method, objective in OBJECTIVE_REFUSALS:
        assert method in listed[objective].refused


def test_the_command_prints_the_table_and_the_markdown(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = run_cli(capsys, "objectives")
    assert code == 0
    for name in OBJECTIVES.names():
        assert re.search(rf"^│ {name} ", out, re.M), name
    assert "reward: not with adaption_prompt, bottleneck" in out
    code, out, _ = run_cli(capsys, "objectives", "--markdown")
    assert code == 0 and out == markdown()
