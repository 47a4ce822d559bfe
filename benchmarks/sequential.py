"""Sequential seeds against a fixed 10-seed design on tiny-llama: the same verdicts, less compute.

    .venv/bin/python benchmarks/sequential.py [--folder DIR] [--only mixed|close]

Two studies, each run three ways in one command: a fixed design (seeds 0..9 for every configuration, judged at
alpha 0.05) and sequential seeds (`{initial: 3, max: 10, until: decided}`) with `step: planned` (the default)
and with `step: 1`. The *mixed* study is a learning-rate grid {1e-4, 1e-3, 1e-2} at r=4 plus r=8 at 1e-2 with a
1% margin: clear differences next to an equivalent pair. The *close* study is r=4 against r=8 at 1e-2 with a
0.1% margin, about the size of the seed spread, where a sequential design has to go far. For each it prints the
optimizer steps and wall time of every design, the ratio to the fixed design, the looks taken, and whether the
verdicts (every configuration's against the best, every row's verdict and winner) are the fixed design's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from oneml.analysis import DecisionOptions, analyse_study, decision_table, load_study  # noqa: E402
from oneml.study.run import run_study  # noqa: E402
from oneml.study.spec import StudySpec  # noqa: E402
from oneml.tracking import resolve_tracking_uri  # noqa: E402

STUDIES = {
    "mixed": ({"lr": {"train.learning_rate": [1e-4, 1e-3, 1e-2], "method.r": [4]},
               "rank": {"train.learning_rate": [1e-2], "method.r": [8]}}, "1%"),
    "close": ({"rank": {"train.learning_rate": [1e-2], "method.r": [4, 8]}}, "0.1%"),
}  # fmt: skip
DESIGNS = {
    "fixed": list(range(10)),
    "planned": {"initial": 3, "max": 10, "until": "decided", "step": "planned"},
    "one": {"initial": 3, "max": 10, "until": "decided", "step": 1},
}


def spec(name: str, root: Path, grids: dict, margin: str, seeds) -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": name,
            "base": {
                "model": {"name": "tiny-llama"},
                "method": {"name": "lora", "alpha": 8, "dropout": 0.0},
                "data": {"dataset": "alpaca-demo", "max_samples": 32, "eval_size": 8, "max_length": 96},
                "train": {"batch_size": 4, "warmup_ratio": 0.0, "logging_steps": 1, "save_adapter": False},
                "tracking": {"root": str(root)},
            },
            "tracks": {track: {"grid": grid} for track, grid in grids.items()},
            "seeds": seeds,
            "budget": {"max_steps": 4},
            "save_steps": 2,
            "margin": margin,
        }
    )


def verdicts(name: str, root: Path) -> tuple[dict[str, str], dict[str, str], float]:
    """(verdicts, winners, alpha): every configuration's class against the best (best and equivalent are one
    class, contender: which of two equivalent configurations has the lower mean is noise), every row's verdict,
    every decided row's winner, and the level the guide judged at."""
    study = load_study(name, resolve_tracking_uri(None, root), artifacts=False)
    found, winners, alpha = {}, {}, 0.0
    for a in analyse_study(study, DecisionOptions()):  # a sequential study: at its last look's share of alpha
        alpha = a.options.alpha
        for label in a.configs:
            verdict = a.verdict(label)
            found[f"{label} vs best"] = "contender" if verdict in ("best", "equivalent") else verdict
        for r in decision_table(a):
            found[f"row {r.priority}"] = r.verdict
            if r.winner:
                winners[r.priority] = r.winner
    return found, winners, alpha


def compare(folder: Path, only: str | None = None) -> dict[str, dict[str, object]]:
    figures: dict[str, dict[str, object]] = {}
    for study, (grids, margin) in STUDIES.items():
        if only and study != only:
            continue
        answers = {}
        for design, seeds in DESIGNS.items():
            root = folder / study / design
            start = time.perf_counter()
            result = run_study(spec(f"{study}-{design}", root, grids, margin, seeds), progress=False)
            answers[design] = verdicts(f"{study}-{design}", root)
            looks = ",".join(str(e["seeds"]) for e in getattr(result, "looks", [])) or "-"
            figures[f"{study}/{design}"] = {
                "steps": result.steps_trained,
                "seconds": round(time.perf_counter() - start, 1),
                "looks": looks,
                "stopped": getattr(result, "stopped", "") or "-",
                "last_alpha": round(answers[design][2], 4),
            }
        fixed, fixed_winners, _ = answers["fixed"]
        for design in DESIGNS:
            row = figures[f"{study}/{design}"]
            row["steps_ratio"] = round(row["steps"] / figures[f"{study}/fixed"]["steps"], 2)
            found, winners, _ = answers[design]
            differ = [f"{k}: {found.get(k)} (fixed: {v})" for k, v in fixed.items() if found.get(k) != v]
            row["same_verdicts"] = "yes" if not differ else "no: " + "; ".join(differ)
            swapped = [
                f"{k}: {w} (fixed: {fixed_winners.get(k)})" for k, w in winners.items() if fixed_winners.get(k) != w
            ]
            row["winners"] = "same" if not swapped else "differ: " + "; ".join(swapped)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="Where the runs go (default: a temporary one).")
    parser.add_argument("--only", choices=sorted(STUDIES), default=None, help="Run one of the two studies.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oneml-sequential-") as tmp:
        figures = compare(args.folder or Path(tmp), args.only)
    for name, row in figures.items():
        print(f"{name:>14}: " + "  ".join(f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
