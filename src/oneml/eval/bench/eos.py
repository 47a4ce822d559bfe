"""Does the fine-tuned model stop? A common failure of fine-tuning: the labels never taught the end-of-turn
token (or the template differs between training and use), and the model rambles to the token limit.

The prompts are the user turns of the run's own held-out conversations, in the run's chat template; a
generation counts as stopped when it ends with EOS or the template's end-of-turn token before
``max_new_tokens``. ``rate`` is the share that stopped; below 0.9 the result says so in plain words.
"""

from __future__ import annotations

from typing import Any

from oneml.errors import OnemlError
from oneml.eval.benchmarks import BENCHMARKS, Benchmark, BenchResult, EvalContext, EvalOptions
from oneml.eval.generate import chat_prompt

DEFAULT_PROMPTS = 16
DEFAULT_MAX_NEW_TOKENS = 256
WARN_BELOW = 0.9


def held_out_prompts(config: Any, count: int) -> list[list[dict[str, str]]]:
    """The conversation before the first assistant turn, for ``count`` held-out rows of the run's data."""
    from oneml.data.mix import load_items
    from oneml.data.prepare import train_eval_split, with_system_prompt

    kind = config.objective.data_kind  # the run's own examples, a mix of datasets included, split as it split them
    items = load_items(config.data, kind).items
    if kind != "sft":  # a pair, or an unpaired row's answers (a list), share one prompt
        items = [(p[0] if isinstance(p, list) else p).prompt for p in items]
    _, held_out = train_eval_split(items, config.data)
    prompts = []
    for conv in held_out[:count]:
        messages = conv.messages if hasattr(conv, "messages") else conv
        first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
        prompts.append(with_system_prompt(list(messages[:first]), config.data.system_prompt))
    return [p for p in prompts if p]


class StopsAtEos(Benchmark):
    name = "eos"

    def load(self, options: EvalOptions, config: Any) -> list[list[dict[str, str]]]:
        prompts = held_out_prompts(config, options.limit or DEFAULT_PROMPTS)
        if not prompts:
            raise OnemlError(f"eos: the run's data ({config.data.dataset}) has no held-out prompt to generate from")
        return prompts

    def score(self, ctx: EvalContext, items: list[list[dict[str, str]]]) -> BenchResult:
        budget = ctx.options.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        prompts = [chat_prompt(ctx.tokenizer, ctx.template, m) for m in items]
        outputs = ctx.generate(prompts, DEFAULT_MAX_NEW_TOKENS)
        rate = sum(o.stopped for o in outputs) / len(outputs)
        end_tokens = [ctx.tokenizer.convert_ids_to_tokens(i) for i in ctx.end_ids]
        verdict = (
            "stops at the end of its turn"
            if rate >= WARN_BELOW
            else f"often runs to the {budget}-token limit instead of ending its turn with {'/'.join(end_tokens)}: "
            "check that the training labels include the end-of-turn token and that the same chat template is used"
        )
        return BenchResult(
            metrics={"rate": rate},
            costs={"generation_mean_new_tokens": sum(o.new_tokens for o in outputs) / len(outputs)},
            details={
                "verdict": verdict,
                "end_tokens": end_tokens,
                "max_new_tokens": budget,
                "records": [
                    {"prompt": p, "output": o.text, "stopped": o.stopped} for p, o in zip(items, outputs, strict=True)
                ],
            },
        )


BENCHMARKS.register("eos", StopsAtEos, "Generation check: the model ends its turn (EOS) under its chat template")
