"""A tiny trained run shared by the evaluation and export tests (trained once per module that asks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oneml import load_run_config, train

TOY_ROWS = [{"question": f"What is {i} plus one?", "choices": [str(i + 1), str(i + 7)], "answer": 0} for i in range(6)]


def tiny_run(root: Path, *extra: str):
    cfg = load_run_config(
        None,
        [
            "model.name=tiny-llama",
            "method.r=4",
            "method.dropout=0.0",
            "data.dataset=alpaca-demo",
            "data.max_samples=48",
            "data.eval_size=6",
            "data.max_length=96",
            "train.max_steps=4",
            "train.batch_size=4",
            "train.learning_rate=0.01",
            f"tracking.root={root}",
            *extra,
        ],
    )
    return train(cfg, progress=False)


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
