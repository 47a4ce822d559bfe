"""Per-configuration learning-rate tuning with successive halving against the full grid, on tiny-llama.

    .venv/bin/python benchmarks/tuning.py [--folder DIR]

One study, run twice: two LoRA configurations (alpha 1 and 64 at r=4: alpha/r scales the update, so their best
learning rates differ) each tuned over five learning rates (1e-3 .. 1e-1, one tuning seed, 24 steps), once with
every candidate run to the end and once with halving among each configuration's candidates (min_steps 8, eta 3).
Prints each one's chosen learning rates, the optimizer steps its tuning runs trained, the ratio (halving / full
grid) and the wall times. The final runs (4 steps at the chosen values) are the same in both and not counted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from oneml.study.run import run_study  # noqa: E402
from oneml.study.spec import StudySpec  # noqa: E402

LEARNING_RATES = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
ALPHAS = [1, 64]


def spec(name: str, root: Path, halving: bool) -> StudySpec:
    tune = {"grid": {"train.learning_rate": LEARNING_RATES}, "seeds": [100], "budget": {"max_steps": 24}}
    if halving:
        tune["halving"] = {"min_steps": 8, "eta": 3}
    return StudySpec.model_validate(
        {
            "name": name,
            "base": {
                "model": {"name": "tiny-llama"},
                "method": {"name": "lora", "r": 4, "dropout": 0.0},
                "data": {"dataset": "alpaca-demo", "max_samples": 32, "eval_size": 8, "max_length": 96},
                "train": {"batch_size": 4, "warmup_ratio": 0.0, "logging_steps": 1, "save_adapter": False},
                "tracking": {"root": str(root)},
            },
            "tracks": {"lora": {"grid": {"method.alpha": ALPHAS}}},
            "seeds": [0],
            "budget": {"max_steps": 4},
            "save_steps": 4,
            "tune": tune,
        }
    )


def compare(folder: Path, progress: bool = False) -> dict[str, object]:
    figures: dict[str, object] = {}
    for label, halving in (("full", False), ("halving", True)):
        study = spec(f"tune-{label}", folder / label, halving)
        start = time.perf_counter()
        result = run_study(study, progress=progress)
        figures[f"{label}_seconds"] = time.perf_counter() - start
        figures[f"{label}_tuning_steps"] = result.tuning_steps
        figures[f"{label}_chosen"] = {t.config.method.alpha: t.config.train.learning_rate for t in result.trials}
    figures["steps_ratio"] = figures["halving_tuning_steps"] / figures["full_tuning_steps"]
    figures["same_choice"] = figures["halving_chosen"] == figures["full_chosen"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="Where the runs go (default: a temporary one).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oneml-tuning-") as tmp:
        figures = compare(args.folder or Path(tmp), progress=True)
    for key, value in figures.items():
        print(f"{key:>22}: {value:.4g}" if isinstance(value, float) else f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
