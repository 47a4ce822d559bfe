"""A tiny trained run shared by the evaluation and export tests (trained once per module that asks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evalkit import TOY_ROWS, tiny_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return root, tiny_run(root)


@pytest.fixture
def lm_eval_task(tmp_path) -> Path:
    """A local lm-eval multiple-choice task over a local JSONL file (no network)."""
    data = tmp_path / "toy.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in TOY_ROWS))
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "oneml_toy.yaml").write_text(
        "task: oneml_toy\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return folder
