"""Training-step benchmarks: oneml's train() against the same run written with transformers + peft + trl.

Both sides: the same tiny real-architecture model (Qwen2, hidden 128, 2 layers, byte tokenizer; or Llama with the
49k SmolLM2 tokenizer), random weights from one seed, LoRA r=8 on every linear layer, the same tokenized rows
(prepared once by oneml's data layer; tokenization is not timed), batch, steps, learning rate, seed and logging
interval. Step time is the median interval between consecutive optimizer-step ends after the first (data,
forward, backward, optimizer, callbacks and oneml's MLflow logging all count).

- sft-overhead / dpo-overhead: our path with packing and the chunked head OFF, so the computation is the
  baseline's exactly; the ratio is what oneml's own machinery costs, and the losses must match.
- sft-packing: packing ON (chunked head off) vs the padded baseline, in real tokens/s; same losses within noise.
- sft-defaults / sft-vocab49k / dpo-chunked: oneml's defaults (packing + chunked head) vs the baseline.
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from pathlib import Path

from perf_core import Benchmark, Measure, register
from transformers import TrainerCallback

SEED = 0
QWEN_SMALL = [
    "model.name=tiny-qwen2",
    "model.overrides={hidden_size: 128, intermediate_size: 384}",
]
LLAMA_49K = ["model.name=tiny-llama", "model.tokenizer=smollm2-135m"]
LORA = dict(r=8, alpha=16, dropout=0.0)
LR = 1e-3
# The first step is warm-up; the figure is the median of the remaining step intervals. Losses are logged every
# 5 steps (oneml's default) and compared at those steps and on the held-out rows after training.
SPECS = {
    "sft-small": dict(
        model=QWEN_SMALL, objective="sft", dataset="alpaca-demo", rows=104, max_length=512, batch=4, steps=11
    ),
    "sft": dict(model=QWEN_SMALL, objective="sft", dataset="alpaca-demo", rows=104, max_length=1024, batch=8, steps=6),
    "dpo": dict(model=QWEN_SMALL, objective="dpo", dataset="dpo-demo", rows=40, max_length=768, batch=2, steps=6),
    # tiny-llama with the 49k SmolLM2 tokenizer: the head is most of the compute (TRL's CPU head made it ~19 s/step)
    "sft-49k": dict(model=LLAMA_49K, objective="sft", dataset="alpaca-demo", rows=56, max_length=256, batch=4, steps=4),
}


class StepClock(TrainerCallback):
    """Optimizer-step end times, tokens seen and logged losses of one run."""

    def __init__(self):
        import gc

        import torch

        gc.collect()  # the previous run's model and optimizer must not count in this run's peak
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        self.ends: list[float] = []
        self.tokens: list[int] = []
        self.losses: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())
        # Real tokens on both sides: padding excluded by attention mask (baseline), packed rows' tails excluded by
        # the count oneml's packed collator passes on (data/packing.py: count_real_tokens).
        self.tokens.append(int(state.num_input_tokens_seen or 0))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def step_seconds(self) -> float:
        return statistics.median(b - a for a, b in zip(self.ends, self.ends[1:], strict=False))

    def tokens_per_second(self) -> float:
        return (self.tokens[-1] - self.tokens[0]) / (self.ends[-1] - self.ends[0])


def _overrides(spec: dict) -> list[str]:
    return [
        *spec["model"],
        "method.name=lora",
        f"method.r={LORA['r']}",
        f"method.alpha={LORA['alpha']}",
        f"method.dropout={LORA['dropout']}",
        "method.target_modules=all-linear",
        f"objective.name={spec['objective']}",
        f"data.dataset={spec['dataset']}",
        f"data.max_samples={spec['rows']}",
        "data.eval_size=8",
        f"data.max_length={spec['max_length']}",
        f"train.max_steps={spec['steps']}",
        f"train.batch_size={spec['batch']}",
        f"train.learning_rate={LR}",
        "train.warmup_ratio=0",
        "train.logging_steps=5",
        "train.eval_before=false",
        "train.save_adapter=false",
        f"train.seed={SEED}",
        f"train.device={spec.get('device', 'cpu')}",
        f"model.dtype={spec.get('dtype', 'float32')}",
    ]


def _config(spec: str, switches: tuple[str, ...] = ()):
    from oneml import load_run_config

    root = tempfile.mkdtemp(prefix="oneml-perf-run-")  # a fresh store per run: nothing is reused between runs
    return load_run_config(None, [*_overrides(SPECS[spec]), *switches, f"tracking.root={root}"])


@functools.cache
def _base_dir(spec: str) -> Path:
    """The model's config and tokenizer on disk, so that the baseline loads them the usual way."""
    from oneml.models import load_model_and_tokenizer

    cfg = _config(spec)
    model, tokenizer = load_model_and_tokenizer(cfg.model, seed=SEED)
    path = Path(tempfile.mkdtemp(prefix="oneml-perf-base-"))
    model.config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@functools.cache
def _data(spec: str):
    """The rows both sides train on: oneml's preparation of the same DataConfig (outside the timing)."""
    from oneml.models import load_model_and_tokenizer

    cfg = _config(spec)
    _, tokenizer = load_model_and_tokenizer(cfg.model, seed=SEED)
    return cfg.objective.prepare(cfg.data, tokenizer)


def ours(spec: str, *switches: str) -> Measure:
    from oneml import train

    cfg = _config(spec, switches)
    clock = StepClock()
    result = train(cfg, progress=False, callbacks=[clock])
    return _measure(clock, result.metrics.get("eval_loss"))


def _plain_model(spec: str):
    """The baseline's model: the same config, weights drawn from the same seed, LoRA by peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, set_seed

    tokenizer = AutoTokenizer.from_pretrained(_base_dir(spec))
    torch.manual_seed(SEED)
    dtype = getattr(torch, SPECS[spec].get("dtype", "float32"))
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(_base_dir(spec)), dtype=dtype)
    model = model.to(SPECS[spec].get("device", "cpu"))
    set_seed(SEED)
    lora = LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules="all-linear",
        task_type="CAUSAL_LM",
    )  # fmt: skip
    return get_peft_model(model, lora), tokenizer


def _common_args(spec: dict) -> dict:
    return dict(
        output_dir=tempfile.mkdtemp(prefix="oneml-perf-plain-"),
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["batch"],
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        logging_steps=5,
        logging_first_step=True,
        seed=SEED,
        data_seed=SEED,
        report_to="none",
        use_cpu=spec.get("device", "cpu") == "cpu",
        bf16=spec.get("dtype") == "bfloat16",
        activation_checkpointing=False,  # TRL's default is on; off on both sides
        save_strategy="no",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
    )


def baseline_sft(spec: str, **switches) -> Measure:
    """``switches``: SFTConfig options of the plain run (padding_free, torch_compile, use_liger_kernel...)."""
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = _plain_model(spec)
    data = _data(spec)
    args = SFTConfig(
        **_common_args(SPECS[spec]), max_length=None, dataset_kwargs={"skip_prepare_dataset": True}, **switches
    )
    clock = StepClock()
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data.train, processing_class=tokenizer, callbacks=[clock]
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return _measure(clock, plain_eval_loss(trainer.model, data.eval, tokenizer.pad_token_id))


def baseline_dpo() -> Measure:
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = _plain_model("dpo")
    data, spec = _data("dpo"), SPECS["dpo"]
    args = DPOConfig(**_common_args(spec), max_length=spec["max_length"], beta=0.1, loss_type=["sigmoid"])
    clock = StepClock()
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=data.train, processing_class=tokenizer, callbacks=[clock]
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return _measure(clock, None)


def plain_eval_loss(model, rows, pad_id: int, batch: int = 8) -> float:
    """Token-weighted eval loss the usual way: full logits, transformers' own loss, weighted by label tokens."""
    import torch

    model.eval()
    device = next(model.parameters()).device  # the batches are built on the CPU; a GPU model needs them there
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            width = max(len(ids) for ids in chunk["input_ids"])
            ids = torch.full((len(chunk["input_ids"]), width), pad_id)
            labels = torch.full_like(ids, -100)
            mask = torch.zeros_like(ids)
            for r, (x, y) in enumerate(zip(chunk["input_ids"], chunk["labels"], strict=True)):
                ids[r, : len(x)], labels[r, : len(y)], mask[r, : len(x)] = torch.tensor(x), torch.tensor(y), 1
            n = int((labels[:, 1:] != -100).sum())
            ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
            total += float(model(input_ids=ids, attention_mask=mask, labels=labels).loss) * n
            count += n
    return total / count


def _measure(clock: StepClock, eval_loss: float | None) -> Measure:
    import torch

    losses = clock.losses + ([eval_loss] if eval_loss is not None else [])
    extra = {"step_seconds": clock.step_seconds(), "tokens_per_second": clock.tokens_per_second()}
    if torch.cuda.is_available():
        extra["peak_gpu_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    return Measure(clock.step_seconds(), losses, extra | {"eval_loss": eval_loss})


def _tokens_per_second(measure: Measure) -> Measure:
    return Measure(measure.extra["tokens_per_second"], measure.losses, measure.extra)


OFF = ("data.packing=false", "train.chunked_loss=false")

register(
    Benchmark(
        "sft-overhead",
        "SFT step time, oneml (packing and chunked head off) vs plain TRL, same computation",
        ours=lambda: ours("sft-small", *OFF),
        baseline=lambda: baseline_sft("sft-small"),
        metric="s/step",
        target="<= 1.05",
        passes=lambda r: r <= 1.05,
        same_loss=1e-4,
    )
)
register(
    Benchmark(
        "dpo-overhead",
        "DPO step time, oneml (chunked head off) vs plain TRL, same computation",
        ours=lambda: ours("dpo", "train.chunked_loss=false"),
        baseline=baseline_dpo,
        metric="s/step",
        target="<= 1.05",
        passes=lambda r: r <= 1.05,
        same_loss=1e-4,
    )
)


def _throughput(name: str, what: str, case: str, *ours_overrides: str) -> None:
    """An SFT tokens/s benchmark against the padded plain TRL run (target >= 1.5x)."""
    register(
        Benchmark(
            name,
            what,
            ours=lambda: _tokens_per_second(ours(case, *ours_overrides)),
            baseline=lambda: _tokens_per_second(baseline_sft(case)),
            metric="tokens/s",
            target=">= 1.5",
            passes=lambda r: r >= 1.5,
            same_loss=1e-3,
        )
    )


_throughput(
    "sft-packing",
    "SFT real tokens/s, padding-free packing (chunked head off) vs the padded plain TRL run",
    "sft",
    "data.packing=true",
    "train.chunked_loss=false",
)
_throughput("sft-defaults", "SFT real tokens/s, oneml defaults (packing + chunked head) vs plain TRL", "sft")
_throughput(
    "sft-vocab49k",
    "SFT real tokens/s at a 49k vocabulary (tiny-llama, SmolLM2 tokenizer), oneml defaults vs plain TRL",
    "sft-49k",
)
register(
    Benchmark(
        "dpo-chunked",
        "DPO step time, oneml defaults (chunked head) vs plain TRL (its fused head)",
        ours=lambda: ours("dpo"),
        baseline=baseline_dpo,
        metric="s/step",
        target="<= 1.0",
        passes=lambda r: r <= 1.0,
        same_loss=1e-4,
    )
)
