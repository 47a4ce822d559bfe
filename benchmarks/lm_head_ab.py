"""The LM head of two source trees side by side on CPU: forward + backward time and peak RSS, alternating.

    git worktree add /tmp/before <commit>                 # the tree to compare against
    .venv/bin/python benchmarks/lm_head_ab.py /tmp/before/src src --pairs 5

Each measurement is a fresh subprocess (``lm_head_ab.py probe SRC TOKENS HIDDEN``) importing
``oneml.models.lm_head`` from SRC: hidden states (TOKENS, HIDDEN) requiring grad, a frozen head at Qwen2.5's
vocabulary (151,936, as under LoRA), every token labelled, SFT's mean; it reports the median of 3 timed
forward + backward passes after one warm-up, the peak RSS above the inputs, and the loss and gradient norm
(which must agree between the trees). The figure is the median over pairs of new / old.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VOCAB = 151_936
SIZES = ((2048, 64), (8192, 64), (2048, 896))
"""(labelled tokens, hidden size): the memory benchmark's 8 x 256 and 8 x 1024, and Qwen2.5-0.5B's hidden size."""


def probe(src: str, tokens: int, hidden: int) -> dict[str, float]:
    sys.path.insert(0, src)
    import torch

    from oneml.models.lm_head import chunked_log_probs

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(VOCAB, hidden, generator=gen) * 0.02
    h = torch.randn(tokens, hidden, generator=gen)
    t = torch.randint(0, VOCAB, (tokens,), generator=gen)
    start_rss = _rss()
    times = []
    for i in range(4):
        x = h.clone().requires_grad_()
        clock = time.perf_counter()
        (logps,) = chunked_log_probs(x, weight, t)
        loss = -logps.mean()
        loss.backward()
        if i:
            times.append(time.perf_counter() - clock)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start_rss
    return {"seconds": statistics.median(times), "peak_bytes": peak, "loss": float(loss), "grad": float(x.grad.norm())}


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def measure(src: str, tokens: int, hidden: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run(
        [sys.executable, __file__, "probe", src, str(tokens), str(hidden)], capture_output=True, text=True, env=env
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="src folder of the tree to compare against")
    parser.add_argument("new", help="src folder of the tree under test")
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args(argv)
    for tokens, hidden in SIZES:
        ratios, mem, agree = [], [], []
        for i in range(args.pairs):
            order = [("old", args.old), ("new", args.new)]
            got = {label: measure(src, tokens, hidden) for label, src in (order if i % 2 == 0 else order[::-1])}
            ratios.append(got["new"]["seconds"] / got["old"]["seconds"])
            mem.append(got["new"]["peak_bytes"] / max(got["old"]["peak_bytes"], 1))
            agree.append(abs(got["new"]["loss"] - got["old"]["loss"]) / abs(got["old"]["loss"]))
            agree.append(abs(got["new"]["grad"] - got["old"]["grad"]) / abs(got["old"]["grad"]))
            old, new = got["old"], got["new"]
            mib = {k: v["peak_bytes"] / 2**20 for k, v in got.items()}
            print(f"  {tokens}x{hidden} pair {i + 1}: old {old['seconds']:.3f} s, new {new['seconds']:.3f} s, "
                  f"peak old {mib['old']:.0f} MiB new {mib['new']:.0f} MiB", flush=True)  # fmt: skip
        print(
            f"{tokens} tokens x hidden {hidden}: time new/old median {statistics.median(ratios):.3f} "
            f"(pairs {', '.join(f'{r:.2f}' for r in ratios)}); peak RSS new/old {statistics.median(mem):.2f}; "
            f"loss and gradient agree to {max(agree):.1e}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        print(json.dumps(probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        sys.exit(main())
