"""Peak memory and time of the LM head + loss at Qwen2.5's vocabulary (151,936), fp32, CPU.

The hidden size is 64, not Qwen2.5-0.5B's 896: the memory in question (logits, log-softmax, their gradients) is
tokens x vocabulary whatever the hidden size, and at 896 one step of the full-logits baseline takes minutes on the
shared 2-core machine. (At 896 both sides would hold 14x larger hidden-state gradients: 29 MB at 8 x 1024.)

Each measurement is a fresh subprocess (``python benchmarks/perf_memory.py CASE BATCH LENGTH``) so that one
allocator's history never flatters the next: it builds the head (frozen, as under LoRA; Qwen ties it to the
embeddings) and the hidden states, records its RSS, runs forward + backward once, and reports the peak RSS
above that point (getrusage), the time of that step, the loss and two gradient summaries (norm and a fixed
random projection) that must agree between the two sides.

Sides: ``ours`` = `oneml.models.lm_head` over the labelled positions; ``unfused`` = the usual full logits
(transformers' cross-entropy for SFT, log-softmax + gather for DPO, TRL's ORPO path for ORPO);
``trl`` = TRL 1.16's fused head (`ChunkedLogProbFunction`, what its SFT/DPO trainers use), scoring every
position as it does on devices without Triton. The time is that of the measured step (forward + backward).
Labels: every token for SFT; for DPO/ORPO the first quarter of each sequence is prompt (rows 0..B/2-1 chosen,
the rest rejected).
Sizes: see SIZE and LARGE.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

VOCAB, HIDDEN = 151_936, 64
SIZE = (8, 256)
"""Batch x length of the alternating pairs: the full-logits side needs ~4 x tokens x vocabulary x 4 bytes (4 GB
here, 16 GB at the issue's 8 x 1024, over the 12 GiB a process may take on the shared machine), and at 8 x 1024
one pair takes minutes there. Baseline memory grows linearly with tokens, the chunked head's does not."""
LARGE = (8, 1024)
"""The issue's size: chunked vs TRL's fused head, one pair (memory is deterministic; the time is one sample)."""


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _inputs(batch: int, length: int):
    import torch

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(VOCAB, HIDDEN, generator=gen).mul_(0.02)  # (V, H), frozen
    hidden = torch.randn(batch, length, HIDDEN, generator=gen).requires_grad_()  # (B, T, H)
    labels = torch.randint(0, VOCAB, (batch, length), generator=gen)
    return weight, hidden, labels


def _prompt_masked(labels):
    labels = labels.clone()
    labels[:, : labels.shape[1] // 4] = -100
    return labels


def _seq_losses(per_token, mask, objective: str, nll=None):
    """DPO or ORPO loss from per-token log-probs (B, T) of completion positions; rows: chosen half, rejected half."""
    from oneml.objectives.losses import dpo_loss, orpo_loss

    half = per_token.shape[0] // 2
    if objective == "dpo":
        sums = (per_token * mask).sum(-1)
        ref = sums.detach() - 1.0  # a frozen reference: constants
        return dpo_loss(sums[:half], sums[half:], ref[:half], ref[half:], 0.1)[0].mean()
    means = (per_token * mask).sum(-1) / mask.sum(-1)
    return orpo_loss(nll, means[:half], means[half:], 0.1)[0].mean()


def _ours(objective, weight, hidden, labels):
    from oneml.models.lm_head import chunked_log_probs

    flat = hidden[:, :-1].reshape(-1, HIDDEN)
    # What each trainer passes as labels: SFT and ORPO (its NLL covers the prompt) every token, DPO the completion.
    shifted = (_prompt_masked(labels) if objective == "dpo" else labels)[:, 1:]
    keep = shifted != -100
    (logps,) = chunked_log_probs(flat[keep.reshape(-1)], weight, shifted[keep])
    if objective == "sft":
        return -logps.mean()
    per_token = logps.new_zeros(shifted.shape).masked_scatter(keep, logps)
    mask = (_prompt_masked(labels)[:, 1:] != -100).float()
    nll = -per_token[: labels.shape[0] // 2].mean() if objective == "orpo" else None
    return _seq_losses(per_token, mask, objective, nll)


def _unfused(objective, weight, hidden, labels):
    import torch.nn.functional as F
    from trl.trainer.utils import selective_log_softmax

    logits = hidden @ weight.t()  # (B, T, V)
    if objective == "sft":
        # transformers' ForCausalLMLoss: upcast, shift, cross-entropy over the flattened tokens
        return F.cross_entropy(logits[:, :-1].float().reshape(-1, VOCAB), labels[:, 1:].reshape(-1))
    shifted = labels[:, 1:]
    mask = (_prompt_masked(labels)[:, 1:] != -100).float()
    if objective == "dpo":
        per_token = logits[:, :-1].log_softmax(-1).gather(-1, shifted[..., None]).squeeze(-1)
        return _seq_losses(per_token, mask, "dpo")
    half = labels.shape[0] // 2  # TRL's ORPO: CE over the chosen rows, selective_log_softmax for the averages
    nll = F.cross_entropy(logits[:half, :-1].reshape(-1, VOCAB), shifted[:half].reshape(-1))
    return _seq_losses(selective_log_softmax(logits[:, :-1], shifted), mask, "orpo", nll)


def _trl(objective, weight, hidden, labels):
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    flat = hidden[:, :-1].reshape(-1, HIDDEN)
    shifted = labels[:, 1:]
    # TRL's fused forward on CPU: every position, 32768-wide vocabulary tiles (_CHUNKED_LOGPROB_CHUNK_SIZE)
    logps = ChunkedLogProbFunction.apply(flat, weight, None, shifted.reshape(-1), 1.0, 32768, None, 1.0, ("log_probs",))
    per_token = logps[0].view(shifted.shape)
    if objective == "sft":
        return -per_token.mean()
    mask = (_prompt_masked(labels)[:, 1:] != -100).float()
    half = labels.shape[0] // 2
    nll = -per_token[:half].mean() if objective == "orpo" else None
    return _seq_losses(per_token, mask, objective, nll)


SIDES = {"ours": _ours, "unfused": _unfused, "trl": _trl}


def probe(side: str, objective: str, batch: int, length: int) -> dict:
    """Run in the subprocess: peak RSS above the inputs, step time, loss and gradient summaries."""
    import torch

    # Every side's imports happen before the reference point: trl.trainer.utils alone adds ~290 MB of RSS.
    import trl.kernels.chunked_logprob  # noqa: F401
    import trl.trainer.utils  # noqa: F401

    import oneml.models.lm_head  # noqa: F401

    torch.manual_seed(0)
    weight, hidden, labels = _inputs(batch, length)
    projection = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(1))
    start_rss = _rss()
    clock = time.perf_counter()
    loss = SIDES[side](objective, weight, hidden, labels)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start_rss
    seconds = time.perf_counter() - clock
    grad = hidden.grad
    return {
        "peak_bytes": peak,
        "seconds": seconds,
        "loss": float(loss.detach()),
        "grad_norm": float(grad.norm()),
        "grad_projection": float((grad * projection).sum()),
    }


def measure(side: str, objective: str, batch: int, length: int):
    from perf_core import Measure

    out = subprocess.run(
        [sys.executable, __file__, side, objective, str(batch), str(length)], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"{side} {objective} {batch}x{length} failed:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    extra = {"seconds": r["seconds"], "peak_GiB": r["peak_bytes"] / 2**30, "tokens": f"{batch}x{length}"}
    return Measure(r["peak_bytes"], [r["loss"], r["grad_norm"], r["grad_projection"]], extra)


def _register() -> None:
    from perf_core import Benchmark, register

    targets = {"sft": 0.25, "dpo": 0.4, "orpo": 0.4}
    cases = [(o, "unfused", SIZE, None) for o in targets] + [("sft", "trl", SIZE, None), ("sft", "trl", LARGE, 1)]
    for objective, other, (batch, length), pairs in cases:
        suffix = "" if other == "unfused" else "-trl" + ("-large" if pairs else "")
        register(
            Benchmark(
                f"memory-{objective}{suffix}",
                f"{objective.upper()} LM head + loss peak memory at vocab {VOCAB}, {batch}x{length} tokens: "
                f"chunked vs {other}",
                ours=lambda o=objective, b=batch, n=length: measure("ours", o, b, n),
                baseline=lambda o=objective, s=other, b=batch, n=length: measure(s, o, b, n),
                metric="bytes",
                target=f"<= {targets[objective]}",
                passes=lambda r, t=targets[objective]: r <= t,
                same_loss=1e-4,
                pairs=pairs,
            )
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    side, objective, batch, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(probe(side, objective, batch, length)))
else:
    _register()
