"""oneml vs the plain transformers + peft + trl script, measured side by side (issue 8).

    .venv/bin/python benchmarks/perf.py                      # every CPU benchmark, 5 pairs each (GPU: perf_gpu.py)
    .venv/bin/python benchmarks/perf.py --only sft-overhead --pairs 7
    .venv/bin/python benchmarks/perf.py --list

Each benchmark runs our path and the baseline ALTERNATELY (ours, baseline, baseline, ours, ...), so that a
neighbour's load on a shared machine hits both alike; the figure is the median over pairs of ours / baseline,
checked against the issue's target. Where the two compute the same thing the losses must match, and the
harness says whether they do. Benchmarks live in perf_*.py beside this file, each registering its cases in
`perf_core.BENCHMARKS`; memory is measured in fresh subprocesses (peak RSS), one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One compute thread per process unless told otherwise: on a machine shared with other jobs, OpenMP threads that
# spin-wait for a busy core made a step 2-3x slower and far noisier (measured here). Both sides run alike.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from perf_core import BENCHMARKS, alternate, report  # noqa: E402


def _load_benchmarks() -> None:
    # The GPU benchmark has its own command (benchmarks/perf_gpu.py): its sides, timing and budget differ.
    import perf_memory  # noqa: F401  (each module registers its benchmarks)
    import perf_pissa  # noqa: F401
    import perf_steps  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run only this benchmark (repeatable); see --list")
    parser.add_argument("--pairs", type=int, default=None, help="alternating pairs per benchmark (default 5)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    _load_benchmarks()
    if args.list:
        for b in BENCHMARKS.values():
            print(f"{b.name:<22}{b.description} (target ours/baseline {b.target})")
        return 0
    names = args.only or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {list(BENCHMARKS)}")
    results = []
    for name in names:
        bench = BENCHMARKS[name]
        why_not = bench.needs()
        if why_not:
            print(f"{name}: skipped ({why_not})", flush=True)
            results.append({"benchmark": name, "skipped": why_not})
            continue
        print(f"{name}: {bench.description}", flush=True)
        result = alternate(bench, args.pairs or bench.pairs or 5)
        report(result)
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
