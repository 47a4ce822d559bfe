"""Held-out loss, perplexity and token accuracy of the trained model, on the run's own evaluation split.

The split is rebuilt from the run's data settings (same seed, same size), so on an SFT run the loss equals
the ``eval_loss`` training recorded: a check that the reloaded model is the trained one. On a preference
run it is the loss on the *chosen* answers. Token-weighted, like training's evaluation
(`oneml.objectives.token_eval`): exp of the mean over all answer tokens, not a mean of batch means.
"""

from __future__ import annotations

import math
from typing import Any

from oneml.data.templates import IGNORE_INDEX
from oneml.eval.benchmarks import BENCHMARKS, Benchmark, BenchResult, EvalContext, EvalOptions
from oneml.eval.generate import padded, token_logprobs


class HeldOut(Benchmark):
    name = "perplexity"

    def load(self, options: EvalOptions, config: Any) -> Any:
        from oneml.data.sources import load_rows

        load_rows(config.data)  # a dataset that has gone missing fails here, before the model loads
        return config

    def total(self, items: Any) -> int:
        return 1

    def score(self, ctx: EvalContext, items: Any) -> BenchResult:
        examples = eval_examples(ctx.config, ctx.tokenizer)
        if ctx.options.limit is not None:
            examples = examples[: ctx.options.limit]
        nll, correct, count = token_sums(ctx.model, examples, ctx.options.batch_size, ctx.tokenizer.pad_token_id or 0)
        ctx.advance(1)
        loss = nll / max(count, 1)
        return BenchResult(
            metrics={"token_accuracy": correct / max(count, 1)},
            lower={"loss": loss, "perplexity": math.exp(min(loss, 50.0))},
            details={"examples": len(examples), "tokens": count, "dataset": ctx.config.data.dataset},
        )


def eval_examples(config: Any, tokenizer: Any) -> list[dict[str, list[int]]]:
    """input_ids/labels of the run's evaluation split (chosen answers for preference data)."""
    data = config.objective.prepare(config.data, tokenizer)
    if "input_ids" in data.eval.column_names:
        return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in data.eval]
    out = []
    for r in data.eval:
        prompt = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        answer = tokenizer(r["chosen"], add_special_tokens=False)["input_ids"]
        ids = (prompt + answer)[: config.data.max_length]
        labels = ([IGNORE_INDEX] * len(prompt) + answer)[: config.data.max_length]
        out.append({"input_ids": ids, "labels": labels})
    return out


def token_sums(model: Any, examples: list[dict[str, list[int]]], batch_size: int, pad: int) -> tuple[float, float, int]:
    """(sum of -log p, number of correct top-1 predictions, number of label tokens) over ``examples``."""
    nll, correct, count = 0.0, 0.0, 0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        rows, labels = [e["input_ids"] for e in chunk], [e["labels"] for e in chunk]
        logps, top1, keep = token_logprobs(model, *padded(rows, labels, pad, model))
        nll -= float(logps[keep].double().sum())
        correct += float(top1[keep].sum())
        count += int(keep.sum())
    return nll, correct, count


BENCHMARKS.register(
    "perplexity", HeldOut, "Held-out loss, perplexity and token accuracy on the run's own evaluation split"
)
