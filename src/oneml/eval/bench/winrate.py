"""Win rate by a model judge: the run's answers against the base model's, another run's, or the data's reference
answers, on the run's held-out prompts, each pair judged in both orders (`oneml.eval.pairwise`), with the
length-controlled win rate of AlpacaEval 2.0 and intervals (`oneml.analysis.winrate`).

The prompts are the run's test rows when it has a test split (``data.test_size`` / ``data.test_fraction``), else its
eval rows: never training rows, and a held-out prompt whose text also occurs among the training rows is dropped and
counted. Test rows first because the win rate feeds the decision guide, which compares on rows nothing selected on
(halving and tuning read the eval rows). Only the first user turn(s) before the first answer are asked, as
AlpacaEval asks single instructions; the reference is that row's first answer (the chosen one of a preference pair).

Opponents:
- ``base``: the pretrained model of ``model.name`` (a run started from an earlier run's adapter is compared with the
  plain pretrained model; name that run with ``--against RUN`` to compare with it), in the run's chat layout.
- ``RUN``: another finished run (id, unique prefix or folder), in its own chat layout and system prompt; how many
  of the prompts were among its training rows is recorded (``opponent_training_overlap``).
- ``reference``: the data's own answers (no generation).

Recorded as ``bench/winrate/<opponent>/lc_win_rate`` and ``.../win_rate`` (fractions; opponent = base, reference or
the other run's id), the intervals and the length coefficient under ``winrate/<opponent>/`` (lc_low, lc_high,
win_low, win_high, length_coef), and everything (prompts, both answers, every raw judgment and parse failure) in
``<run>/eval/winrate.json``, one section per opponent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from oneml.errors import OnemlError
from oneml.eval.benchmarks import BENCHMARKS, Benchmark, BenchResult, EvalContext, EvalOptions
from oneml.eval.judges import Judge, JudgeOptions, free_memory, resolve_judge
from oneml.eval.pairwise import Pair, judge_pairs, render_conversation, tally

DEFAULT_PROMPTS = 100
DEFAULT_MAX_NEW_TOKENS = 256
FEW_PROMPTS = 50
"""Below this many judged prompts the intervals cover less than they claim when the length term matters (88-93% at
20 prompts in tests/analysis/test_winrate_calibration.py's simulations); the result says so."""


# --- the prompts -------------------------------------------------------------------------------------------------


def first_exchange(item: Any) -> tuple[list[dict[str, str]], str | None]:
    """(the conversation before the first answer, that answer or None) of one example of any data kind."""
    from oneml.data.messages import for_template

    if hasattr(item, "messages"):
        messages = for_template(item.messages)
        first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
        return messages[:first], (messages[first]["content"] if first < len(messages) else None)
    if hasattr(item, "chosen"):
        return for_template(item.prompt), item.chosen
    return for_template(item.prompt), (item.completion if getattr(item, "label", False) else None)


def _key(messages: list[dict[str, str]]) -> str:
    return json.dumps(messages, sort_keys=True)


def training_prompts(config: Any) -> tuple[set[str], list[Any], list[Any]]:
    """(keys of the training rows' prompts, eval rows, test rows) of a run's data, split as training split it."""
    from oneml.data.mix import load_items
    from oneml.data.prepare import split_rows

    items = load_items(config.data, config.objective.data_kind).items
    train, eval_, test = split_rows(items, config.data)
    return {_key(first_exchange(i)[0]) for i in train}, eval_, test


def held_out(config: Any, limit: int | None, need_reference: bool = False) -> dict[str, Any]:
    """The run's held-out prompts with their references (only those with one when ``need_reference``), at most
    ``limit`` (default 100): test rows if it has them, else eval rows."""
    seen, eval_, test = training_prompts(config)
    rows, which = (test, "test") if test else (eval_, "eval")
    examples, dropped, unanswered = [], 0, 0
    for item in rows:
        prompt, reference = first_exchange(item)
        if not any(m["role"] == "user" for m in prompt):
            continue
        if _key(prompt) in seen:
            dropped += 1
        elif need_reference and not reference:
            unanswered += 1
        else:
            examples.append({"prompt": prompt, "reference": reference})
    out = {"examples": examples[: limit or DEFAULT_PROMPTS], "rows": which, "seen_in_training": dropped}
    return out | ({"without_reference": unanswered} if need_reference else {})


# --- who answers -------------------------------------------------------------------------------------------------


@dataclass
class Speaker:
    """A model answering in a chat layout: its template, end-of-turn tokens and system prompt."""

    model: Any
    tokenizer: Any
    template: str
    end_ids: list[int]
    system_prompt: str | None

    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int, batch: int, advance) -> list[str]:
        from oneml.data.messages import with_system_prompt
        from oneml.eval.generate import chat_prompt, generate

        prompts = [chat_prompt(self.tokenizer, self.template, with_system_prompt(c, self.system_prompt)) for c in
                   conversations]  # fmt: skip
        outs = generate(self.model, self.tokenizer, prompts, end_ids=self.end_ids, max_new_tokens=max_new_tokens,
                        batch_size=batch, progress=advance)  # fmt: skip
        return [o.text for o in outs]


def speaker_for(model: Any, tokenizer: Any, data_config: Any) -> Speaker:
    from oneml.data.templates import resolve_chat_template
    from oneml.eval.generate import end_of_turn_ids

    template = resolve_chat_template(tokenizer, data_config)
    return Speaker(model, tokenizer, template, end_of_turn_ids(tokenizer, template), data_config.system_prompt)


class Opponent:
    key: str = ""
    """How metrics and the record name it: base, reference, or a run id."""
    label: str = ""

    def speaker(self, ctx: EvalContext) -> Speaker | None:
        """The model that answers (loaded now), or None when the answers are fixed (references)."""
        return None

    def details(self) -> dict[str, Any]:
        return {}


class Base(Opponent):
    key, label = "base", "the base model"

    def __init__(self, config: Any):
        self.label = f"the base model {config.model.name}"

    def speaker(self, ctx: EvalContext) -> Speaker:
        from oneml.models import load_model_and_tokenizer

        config = ctx.config
        base_cfg = config.model.model_copy(update={"adapter": None})
        model, tokenizer = load_model_and_tokenizer(base_cfg, device=_device(ctx.model), seed=config.train.seed)
        return speaker_for(model, tokenizer, config.data)


class Reference(Opponent):
    key, label = "reference", "the data's reference answers"


class OtherRun(Opponent):
    def __init__(self, spec: str, config: Any, options: JudgeOptions, prompts: list[dict[str, Any]]):
        from oneml.eval.trained import open_run
        from oneml.tracking import layout

        folder = layout.find_run(spec, options.root, field="--against")
        self.run = open_run(str(folder), options.root)
        if self.run.run_id == config.run_id:
            raise OnemlError("--against: that is the run being judged; give base, reference or another run")
        if not self.run.config.train.save_adapter or not self.run.model_dir.is_dir():
            raise OnemlError(f"--against: run {self.run.run_id} has no saved model (train.save_adapter: false)")
        self.key, self.label = self.run.run_id, f"run {self.run.run_id}"
        seen, _, _ = training_prompts(self.run.config)
        self.overlap = sum(_key(p["prompt"]) in seen for p in prompts)

    def speaker(self, ctx: EvalContext) -> Speaker:
        model, tokenizer = self.run.load(str(_device(ctx.model)))
        return speaker_for(model, tokenizer, self.run.config.data)

    def details(self) -> dict[str, Any]:
        return {"opponent_training_overlap": self.overlap, "opponent_method": self.run.config.method.name}


def resolve_opponent(options: JudgeOptions, config: Any, prompts: list[dict[str, Any]]) -> Opponent:
    against = options.against.strip()
    if against == "base":
        return Base(config)
    if against == "reference":
        return Reference()
    if not against:
        raise OnemlError("--against: empty; give base, reference or a run id")
    return OtherRun(against, config, options, prompts)


def _device(model: Any) -> Any:
    return next(model.parameters()).device


# --- the benchmark -----------------------------------------------------------------------------------------------


def judge_options(options: EvalOptions, name: str) -> JudgeOptions:
    if options.judge is None:
        raise OnemlError(
            f"{name}: needs --judge: a model (preset, hub id or directory) or an OpenAI-compatible endpoint "
            "http://host:port/v1"
        )
    return options.judge


class WinRate(Benchmark):
    name = "winrate"
    uses_judge = True

    def load(self, options: EvalOptions, config: Any) -> dict[str, Any]:
        jopts = judge_options(options, self.name)
        items = held_out(config, options.limit, need_reference=jopts.against.strip() == "reference")
        if not items["examples"]:
            raise OnemlError(
                f"winrate: the run's {items['rows']} rows of {config.data.dataset} leave no prompt to judge"
            )
        items["opponent"] = resolve_opponent(jopts, config, items["examples"])
        items["judge"] = resolve_judge(jopts, options.batch_size)
        return items

    def total(self, items: dict[str, Any]) -> int:
        return 2 * len(items["examples"])

    def score(self, ctx: EvalContext, items: dict[str, Any]) -> BenchResult:
        examples, opponent, judge = items["examples"], items["opponent"], items["judge"]
        prompts = [e["prompt"] for e in examples]
        budget, batch = ctx.options.max_new_tokens or DEFAULT_MAX_NEW_TOKENS, ctx.options.batch_size
        mine = Speaker(ctx.model, ctx.tokenizer, ctx.template, ctx.end_ids, ctx.config.data.system_prompt)
        ours = mine.answer(prompts, budget, batch, ctx.bar(f"{self.name}: answers of the run", len(prompts)))
        theirs = opponent_answers(ctx, opponent, prompts, budget, [e["reference"] for e in examples], self.name)
        pairs = [Pair(p, render_conversation(p), a, b) for p, a, b in zip(prompts, ours, theirs, strict=True)]
        extra = {"rows": items["rows"], "prompts_seen_in_training_dropped": items["seen_in_training"]}
        if "without_reference" in items:
            extra["prompts_without_reference_dropped"] = items["without_reference"]
        return run_judging(self.name, ctx, pairs, judge, opponent, extra)


def opponent_answers(
    ctx: EvalContext, opponent: Opponent, prompts, budget: int, references, name: str, answer=None, steps=None
) -> list:
    """The opponent's answers: the references as they are, or generated by its model (loaded here, let go after);
    ``answer(speaker, progress)`` replaces the one-turn generation (multi-turn sets), over ``steps`` progress steps."""
    speaker = opponent.speaker(ctx)
    if speaker is None:
        return list(references)
    try:
        bar = ctx.bar(f"{name}: answers of {opponent.label}", steps or len(prompts))
        if answer is not None:
            return answer(speaker, bar)
        return speaker.answer(prompts, budget, ctx.options.batch_size, bar)
    finally:
        del speaker
        free_memory()


def run_judging(
    name: str, ctx: EvalContext, pairs: list[Pair], judge: Judge, opponent: Opponent, extra: dict
) -> BenchResult:
    """Judge the pairs (the judge on the run's device), then the win rates and everything to keep."""
    from oneml.analysis.winrate import summarise

    judge.device = str(_device(ctx.model))
    try:
        stopped = judge_pairs(pairs, judge, ctx.advance)
    finally:
        judge.close()
    counts = tally(pairs)
    judged = [p for p in pairs if p.preference is not None]
    details: dict[str, Any] = {
        "against": opponent.key,
        "opponent": opponent.label,
        **opponent.details(),
        "judge": judge.name,
        "judge_kind": judge.kind,
        "requests_used": judge.budget.used,
        "request_budget": judge.budget.left,
        "stopped_early": stopped,
        **extra,
        **counts,
    }
    metrics: dict[str, float] = {}
    costs: dict[str, float] = {}
    if len(judged) >= 2:
        stats = summarise(
            [p.preference for p in judged], [len(p.model_answer) - len(p.opponent_answer) for p in judged]
        )
        details["statistics"] = stats.as_dict()
        metrics = {f"{opponent.key}/lc_win_rate": stats.lc_win_rate, f"{opponent.key}/win_rate": stats.win_rate}
        costs = {
            f"{name}/{opponent.key}/{k}": getattr(stats, k)
            for k in ("lc_low", "lc_high", "win_low", "win_high", "length_coef")
        }
        if stats.n < FEW_PROMPTS:
            details["warning"] = (
                f"only {stats.n} prompts judged in both orders: below {FEW_PROMPTS} the intervals cover less than "
                "they claim when length matters; raise --limit"
            )
    else:
        details["warning"] = f"{len(judged)} prompt(s) judged in both orders: no win rate (see the records)"
    details["records"] = [p.record() for p in pairs]
    return BenchResult(metrics=metrics, costs=costs, details=details, section=opponent.key)


BENCHMARKS.register(
    "winrate",
    WinRate,
    "Win rate by a judge (--judge) vs base, another run or the references (--against), length-controlled, both orders",
)
