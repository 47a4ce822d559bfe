"""`oneml export RUN`: what was trained, in a form any transformers/peft user can load.

- ``merged`` (default): the adapter folded into the base, saved as a plain transformers model
  (safetensors, config, tokenizer, generation config). QLoRA is merged into the *dequantized* base (a
  float model, not a 4-bit one); PiSSA and SORSA need no special case because their saved adapter is
  already a plain LoRA against the original base.
- ``adapter``: the peft adapter folder only (adapter_config.json + adapter_model.safetensors + tokenizer),
  loadable with ``PeftModel.from_pretrained(base, folder)``; refused for full fine-tuning (no adapter).
Both write a model card (README.md) with the run's config and metrics. The folder is written beside its
destination and renamed into place, so an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from oneml.errors import OnemlError
from oneml.tracking import layout

MODES = ("merged", "adapter")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class Exported:
    folder: Path
    mode: str
    files: list[str]


def export_run(
    spec: str,
    out: str | Path,
    *,
    mode: str = "merged",
    root: str | Path = "oneml-runs",
    dtype: str | None = None,
    force: bool = False,
    console: Any = None,
    tracking_uri: str | None = None,
) -> Exported:
    from oneml.eval.trained import open_run

    if mode not in MODES:
        raise OnemlError(f"--mode: must be one of {', '.join(MODES)}, got {mode!r}")
    run = open_run(spec, root, tracking_uri, console)
    method = run.config.method
    out = Path(out).expanduser().resolve()
    _check_destination(out, force)
    if mode == "merged" and not method.mergeable:
        raise OnemlError(f"--mode: a {method.name} result cannot be merged into the base; use --mode adapter")
    if mode == "adapter" and not method.is_adapter:
        raise OnemlError(f"--mode: a {method.name} result is a whole model, not an adapter; use --mode merged")
    torch_dtype = _dtype(dtype)
    staging = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as err:  # os.access cannot tell (root passes it on read-only mounts): trying can
        raise OnemlError(f"--out: cannot write in {out.parent}: {err.strerror}") from None
    try:
        if mode == "merged":
            with console.status(f"loading and merging {run.run_id}") if console else nullcontext():
                _write_merged(run, staging, torch_dtype)
        else:
            _write_adapter(run, staging)
        write_model_card(run, staging, mode)
        layout.publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(out, mode, sorted(p.name for p in out.iterdir()))


def _check_destination(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OnemlError(f"--out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OnemlError(f"--out: {out} is not empty; choose another folder or pass --force to replace it")
    if not os.access(out.parent if out.parent.exists() else Path.cwd(), os.W_OK):
        raise OnemlError(f"--out: cannot write in {out.parent}")


def _dtype(name: str | None) -> Any:
    import torch

    if name is None:
        return None
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in choices:
        raise OnemlError(f"--dtype: must be one of {', '.join(choices)}, got {name!r}")
    return choices[name]


def _write_merged(run: Any, folder: Path, dtype: Any) -> None:
    model, tokenizer = run.load("cpu")
    merged = run.config.method.merge(model) if run.config.method.is_adapter else model
    merged = _plain(merged)
    if dtype is not None:
        merged = merged.to(dtype)
    merged.config.torch_dtype = next(merged.parameters()).dtype
    merged.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _plain(model: Any) -> Any:
    """A merged model as transformers saves it: no quantization flags or config left from training."""
    for attr in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized", "quantization_method"):
        if getattr(model, attr, False):
            setattr(model, attr, False)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    return model


def _write_adapter(run: Any, folder: Path) -> None:
    source = run.model_dir
    missing = [f for f in ADAPTER_FILES if not (source / f).is_file()]
    if missing:
        raise OnemlError(f"RUN: {source} lacks {', '.join(missing)}; the run did not save a peft adapter")
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".*"), dirs_exist_ok=True)


def write_model_card(run: Any, folder: Path, mode: str) -> None:
    config = run.config
    metrics = dict(run.metrics)
    for path in sorted((run.folder / "eval").glob("*.json")):
        metrics |= json.loads(path.read_text()).get("metrics", {})
    front = {
        "library_name": "peft" if mode == "adapter" else "transformers",
        "base_model": config.model.name,
        "tags": ["oneml", config.method.name, config.objective.name],
        "pipeline_tag": "text-generation" if _scores(config) is None else "text-classification",
    }
    rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items()))
    note = _mode_note(config, mode)
    text = (
        f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n\n"
        f"# {config.method.name} fine-tune of {config.model.name} (oneml run {run.run_id})\n\n"
        f"{note}\n\n"
        f"Objective: {config.objective.name} on {config.data.dataset}; {config.train.max_steps} steps, "
        f"seed {config.train.seed}.\n\n"
        f"## Metrics\n\n| metric | value |\n|---|---|\n{rows}\n\n"
        f"## Training configuration\n\n```yaml\n{yaml.safe_dump(config.to_dict(), sort_keys=False)}```\n"
    )
    (folder / "README.md").write_text(text)


def _scores(config: Any) -> str | None:
    """What a reward model's card says about its output, or None for a causal LM."""
    if type(config.objective).head == "lm":
        return None
    return "a reward model: one score per sequence (higher = preferred), read at its last token"


def _mode_note(config: Any, mode: str) -> str:
    scorer = _scores(config)
    cls = "AutoModelForCausalLM" if scorer is None else "AutoModelForSequenceClassification"
    what = "" if scorer is None else f" It is {scorer}."
    if mode == "adapter":
        quant = getattr(config.method, "quantize", "none")
        base = f"the base {config.model.name}" + (f" quantized to {quant} (as in training)" if quant != "none" else "")
        load = "" if scorer is None else f" (as `{cls}` with `num_labels=1`; the adapter holds the score head)"
        return f"A peft adapter: load {base}{load}, then `PeftModel.from_pretrained(base, this_folder)`.{what}"
    return f"A merged model: load it with `{cls}.from_pretrained(this_folder)`; no peft needed.{what}"


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
