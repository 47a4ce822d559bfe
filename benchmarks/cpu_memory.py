"""Peak memory and speed of the demo config on CPU: oneml against LLaMA-Factory 0.9.5, side by side.

    .venv/bin/python benchmarks/cpu_memory.py --lf-venv /work/lf-venv            # 2 alternating pairs, 30 steps
    .venv/bin/python benchmarks/cpu_memory.py --set train.return_memory=true       # oneml only (no --lf-venv)

Both sides train the same thing in their own process: the embedded SmolLM2-135M-Instruct (oneml's converted
safetensors folder under $ONEML_HOME), fp32, LoRA r16 alpha 32 dropout 0.05 on q/k/v/o, alpaca-demo (LLaMA-Factory's
own alpaca_en_demo.json) with 48 rows held out, the model's chat template with its default system prompt, 256
tokens, batch 4, 30 steps, lr 5e-4 cosine with 10% warm-up, seed 0, one compute thread each. Each side as its user
runs it: oneml's defaults (packing, chunked head, lean activations, evaluation before and after), LLaMA-Factory's
(gradient checkpointing, padded batches, full logits, no evaluation). Measured: the peak RSS of the whole process
tree (sampled every 50 ms), and real tokens per second of training wall time (oneml: train_tokens over
train_wall_seconds; LLaMA-Factory: num_input_tokens_seen, non-padding, over train_runtime).

LLaMA-Factory lives in its own venv (pip install torch==2.13.0 first, then llamafactory==0.9.5); nothing of it is
committed. Its PyPI torchaudio is a CUDA build that cannot load beside the CPU torch, and LLaMA-Factory imports it
(for audio inputs only) at start: the launcher below stands an empty module in for it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
LF_LAUNCHER = (
    "import importlib.machinery, sys, types\n"
    "stub = types.ModuleType('torchaudio'); stub.__spec__ = importlib.machinery.ModuleSpec('torchaudio', None)\n"
    "sys.modules['torchaudio'] = stub\n"
    "from llamafactory.cli import main\n"
    "sys.argv = ['llamafactory-cli', *sys.argv[1:]]\n"
    "main()\n"
)


def _tree_rss(pid: int) -> int:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            total += next(
                int(line.split()[1]) * 1024
                for line in Path(f"/proc/{current}/status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
        except (OSError, StopIteration):
            pass
    return total


def _run_sampled(cmd: list[str], env: dict[str, str], log: Path) -> tuple[int, float]:
    """(peak RSS of the process tree, wall seconds); fails loudly with the log's tail."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.05)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return peak, time.perf_counter() - start


def run_oneml(work: Path, steps: int, overrides: list[str], env: dict[str, str]) -> dict:
    root = work / "oneml-runs"
    sets = [f"train.max_steps={steps}", f"tracking.root={root}", *overrides]
    cmd = [sys.executable, "-m", "oneml", "train", "configs/demo.yaml", *[a for s in sets for a in ("--set", s)]]
    peak, wall = _run_sampled(cmd, env, work / "oneml.log")
    metrics = json.loads(next((root / "runs").glob("*/metrics.json")).read_text())
    tokens = metrics["train_tokens"]
    return {
        "peak_gib": peak / 2**30,
        "tokens_per_s": tokens / metrics["train_wall_seconds"],
        "tokens": tokens,
        "eval_loss": metrics["eval_loss"],
        "process_seconds": wall,
    }


def run_llamafactory(work: Path, venv: Path, steps: int, env: dict[str, str]) -> dict:
    import yaml

    from oneml.data.sources import load_source_rows
    from oneml.models import ensure_embedded

    data = work / "lf-data"
    data.mkdir()
    # The rows oneml reads (LLaMA-Factory's own alpaca_en_demo.json, fetched and cached by oneml's catalogue).
    (data / "alpaca_en_demo.json").write_text(json.dumps(load_source_rows("alpaca-demo"), ensure_ascii=False))
    (data / "dataset_info.json").write_text(json.dumps({"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}))
    out = work / "lf-out"
    config = {
        "model_name_or_path": str(ensure_embedded()), "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_target": "q_proj,k_proj,v_proj,o_proj",
        "dataset": "alpaca_en_demo", "dataset_dir": str(data), "template": "chatml", "default_system": SYSTEM,
        "cutoff_len": 256, "val_size": 48, "output_dir": str(out), "overwrite_output_dir": True,
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "learning_rate": 5.0e-4,
        "max_steps": steps, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "logging_steps": 5, "seed": 0,
        "report_to": "none", "save_strategy": "no", "preprocessing_num_workers": 1, "dataloader_num_workers": 0,
        "use_cpu": True, "include_num_input_tokens_seen": "non_padding",
    }  # fmt: skip
    # YAML: LLaMA-Factory 0.9.5 reads a .json config with json.load on a path, which fails.
    (work / "lf.yaml").write_text(yaml.safe_dump(config))
    (work / "lf_launch.py").write_text(LF_LAUNCHER)
    cmd = [str(venv / "bin" / "python"), str(work / "lf_launch.py"), "train", str(work / "lf.yaml")]
    peak, wall = _run_sampled(cmd, env, work / "lf.log")
    state = json.loads((out / "trainer_state.json").read_text())
    results = json.loads((out / "train_results.json").read_text())
    tokens = state.get("num_input_tokens_seen") or 0
    return {
        "peak_gib": peak / 2**30,
        "tokens_per_s": tokens / results["train_runtime"],
        "tokens": tokens,
        "eval_loss": None,
        "process_seconds": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lf-venv", type=Path, help="LLaMA-Factory 0.9.5's venv; without it that side is skipped")
    parser.add_argument("--pairs", type=int, default=2, help="alternating pairs (oneml, LF, LF, oneml, ...)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="oneml overrides, repeatable")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args(argv)
    lf = args.lf_venv
    if lf is not None and not (lf / "bin" / "python").is_file():
        print(f"--lf-venv: {lf} has no bin/python", file=sys.stderr)
        return 2
    if lf is None:
        print("LLaMA-Factory side skipped: give --lf-venv PATH (a venv with llamafactory==0.9.5)", file=sys.stderr)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    load = os.getloadavg()[0]
    results: dict[str, list[dict]] = {"oneml": [], "llamafactory": []}
    for pair in range(args.pairs):
        order = ["oneml", "llamafactory"] if pair % 2 == 0 else ["llamafactory", "oneml"]
        for side in order:
            if side == "llamafactory" and lf is None:
                continue
            with tempfile.TemporaryDirectory(prefix=f"cpu-memory-{side}-") as tmp:
                work = Path(tmp)
                r = run_oneml(work, args.steps, args.overrides, env) if side == "oneml" else None
                r = r or run_llamafactory(work, lf, args.steps, env)
            results[side].append(r)
            print(
                f"pair {pair + 1} {side:12s} peak {r['peak_gib']:.3f} GiB {r['tokens_per_s']:7.1f} tokens/s", flush=True
            )
    _summary(results, load)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "load_before": load, "load_after": os.getloadavg()[0]}))
    return 0


def _summary(results: dict[str, list[dict]], load: float) -> None:
    import statistics

    print(f"\nload average before {load:.1f}, after {os.getloadavg()[0]:.1f}")
    ours, theirs = results["oneml"], results["llamafactory"]
    for name, rows in results.items():
        if rows:
            peak = max(r["peak_gib"] for r in rows)
            speed = statistics.median(r["tokens_per_s"] for r in rows)
            print(f"{name:12s} peak RSS {peak:.3f} GiB (max over runs)  tokens/s {speed:.1f} (median)")
    if ours and theirs:
        pairs = list(zip(ours, theirs, strict=False))
        mem = statistics.median(a["peak_gib"] / b["peak_gib"] for a, b in pairs)
        speed = statistics.median(a["tokens_per_s"] / b["tokens_per_s"] for a, b in pairs)
        print(f"oneml / LLaMA-Factory: peak memory {mem:.2f}x, tokens/s {speed:.2f}x (medians of per-pair ratios)")


if __name__ == "__main__":
    sys.exit(main())
