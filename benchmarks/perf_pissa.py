"""PiSSA initialisation: oneml's fast randomized SVD (``method.svd: fast``, 4 subspace iterations) against the usual
exact SVD (peft ``init_lora_weights="pissa"``), on the embedded SmolLM2-135M (real weights: a random matrix has a
flat spectrum, which is not what PiSSA is for), rank 16 on every linear layer.

The figure is the init time (the model load is not timed). Both sides then run the same few AdamW steps on the
same alpaca-demo rows and are scored on the same held-out rows: the eval loss at init must equal the base model's
on both (the residual is exact either way), and after the steps the two must agree within noise (1%).
"""

from __future__ import annotations

import functools
import time

from perf_core import Benchmark, Measure, register

RANK, STEPS, BATCH, MAX_LENGTH = 16, 3, 4, 128


@functools.cache
def _rows():
    from oneml.config import DataConfig, ModelConfig
    from oneml.data import prepare_sft
    from oneml.models import load_model_and_tokenizer

    _, tokenizer = load_model_and_tokenizer(ModelConfig(name="smollm2-135m"))
    data = prepare_sft(DataConfig(max_samples=64, eval_size=8, max_length=MAX_LENGTH), tokenizer)
    return data, tokenizer.pad_token_id


def _model():
    from oneml.config import ModelConfig
    from oneml.models import load_model_and_tokenizer

    return load_model_and_tokenizer(ModelConfig(name="smollm2-135m"))[0]


def _batches(rows, pad_id: int):
    import torch

    for i in range(0, len(rows), BATCH):
        chunk = rows[i : i + BATCH]
        width = max(len(x) for x in chunk["input_ids"])
        ids = torch.full((len(chunk["input_ids"]), width), pad_id)
        labels, mask = torch.full_like(ids, -100), torch.zeros_like(ids)
        for r, (x, y) in enumerate(zip(chunk["input_ids"], chunk["labels"], strict=True)):
            ids[r, : len(x)], labels[r, : len(y)], mask[r, : len(x)] = torch.tensor(x), torch.tensor(y), 1
        yield {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _eval_loss(model, rows, pad_id: int) -> float:
    import torch

    total = count = 0
    with torch.no_grad():
        for batch in _batches(rows, pad_id):
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * n
            count += n
    return total / count


def _after_init(model, init_seconds: float) -> Measure:
    """The same few training steps and evaluations on both sides."""
    import torch

    data, pad_id = _rows()
    losses = [_eval_loss(model.eval(), data.eval, pad_id)]
    model.train()
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for _, batch in zip(range(STEPS), _batches(data.train, pad_id), strict=False):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    losses.append(_eval_loss(model.eval(), data.eval, pad_id))
    return Measure(init_seconds, losses, {"eval_loss_init": losses[0], "eval_loss_trained": losses[1]})


def ours() -> Measure:
    from oneml.methods import MethodContext
    from oneml.methods.pissa import PiSSAConfig

    model = _model()
    method = PiSSAConfig(r=RANK, alpha=2 * RANK, dropout=0.0, target_modules="all-linear", svd="fast", niter=4)
    start = time.perf_counter()
    model = method.apply(model, MethodContext())
    return _after_init(model, time.perf_counter() - start)


def baseline() -> Measure:
    from peft import LoraConfig, get_peft_model

    model = _model()
    lora = LoraConfig(
        r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0, target_modules="all-linear", init_lora_weights="pissa"
    )
    start = time.perf_counter()
    model = get_peft_model(model, lora)
    return _after_init(model, time.perf_counter() - start)


register(
    Benchmark(
        "pissa-init",
        f"PiSSA init time on SmolLM2-135M (r={RANK}, all linear layers): fast randomized SVD vs exact SVD",
        ours=ours,
        baseline=baseline,
        metric="s",
        target="<= 0.1",
        passes=lambda r: r <= 0.1,
        same_loss=0.01,
    )
)
