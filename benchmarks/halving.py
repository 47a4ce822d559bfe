"""Successive halving against the full grid on tiny-llama: same winner, less compute.

    .venv/bin/python benchmarks/halving.py [--folder DIR]

Runs a learning-rate grid (1e-5 .. 1e-2, two seeds, 8 steps) twice: every configuration to the end, and with
halving (min_steps 2, eta 2). Prints each one's best configuration, the optimizer steps each trained and
their ratio (halving / full grid).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from oneml.study import expand  # noqa: E402
from oneml.study.run import run_study  # noqa: E402
from oneml.study.spec import StudySpec  # noqa: E402

LEARNING_RATES = [1e-5, 1e-4, 1e-3, 1e-2]


def spec(name: str, root: Path, halving: bool) -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": name,
            "base": {
                "model": {"name": "tiny-llama"},
                "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
                "data": {"dataset": "alpaca-demo", "max_samples": 32, "eval_size": 8, "max_length": 96},
                "train": {"batch_size": 4, "warmup_ratio": 0.0, "logging_steps": 1, "save_adapter": False},
                "tracking": {"root": str(root)},
            },
            "tracks": {"lr": {"grid": {"train.learning_rate": LEARNING_RATES}}},
            "seeds": [0, 1],
            "budget": {"max_steps": 8},
            "save_steps": 2,
            "halving": {"min_steps": 2, "eta": 2, "metric": "eval_loss"} if halving else None,
        }
    )


def best(study: StudySpec) -> float:
    """The learning rate with the lowest final eval_loss (mean over seeds) among finished runs."""
    losses: dict[float, list[float]] = {}
    for t in expand(study):
        path = Path(t.config.tracking.root) / "runs" / t.run_id / "metrics.json"
        if path.is_file():
            losses.setdefault(t.config.train.learning_rate, []).append(json.loads(path.read_text())["eval_loss"])
    return min(losses, key=lambda lr: sum(losses[lr]) / len(losses[lr]))


def compare(folder: Path, progress: bool = False) -> dict[str, float]:
    figures: dict[str, float] = {}
    for label, halving in (("full", False), ("halving", True)):
        study = spec(f"lr-{label}", folder / label, halving)
        start = time.perf_counter()
        result = run_study(study, progress=progress)
        figures[f"{label}_seconds"] = time.perf_counter() - start
        figures[f"{label}_steps"] = result.steps_trained
        figures[f"{label}_best_lr"] = best(study)
    figures["steps_ratio"] = figures["halving_steps"] / figures["full_steps"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="Where the runs go (default: a temporary one).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oneml-halving-") as tmp:
        figures = compare(args.folder or Path(tmp), progress=True)
    for key, value in figures.items():
        print(f"{key:>20}: {value:.4g}")


if __name__ == "__main__":
    main()
