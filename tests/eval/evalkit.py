"""What the evaluation and export tests share: a tiny trained run."""

from __future__ import annotations

from pathlib import Path

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
