"""GSM8K: grade-school maths word problems, scored by exact match on the final number (Cobbe et al. 2021,
https://arxiv.org/abs/2110.14168).

Few-shot with the eight chain-of-thought exemplars of Wei et al. 2022 (https://arxiv.org/abs/2201.11903),
the ones lm-eval's gsm8k-cot uses. The model is asked in its own chat layout (exemplars as earlier turns):
that is how a fine-tuned model is used. Greedy decoding.

Two scores, as lm-eval reports them:
- ``exact_match``: the last number in the output equals the reference (the "flexible" extraction);
- ``strict_match``: the output states "The answer is N" (or "#### N") and N equals the reference.
Numbers compare as decimals after removing thousands separators and currency signs: "1,000.00" == 1000.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from oneml.errors import OnemlError
from oneml.eval.benchmarks import (
    BENCHMARKS,
    Benchmark,
    BenchResult,
    EvalContext,
    EvalOptions,
    hub_rows,
    limited,
    local_rows,
)

DEFAULT_SHOTS = 8
DEFAULT_MAX_NEW_TOKENS = 256
HUB_ID = "openai/gsm8k"

EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, "
        "there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. "
        "So there must have been 21 - 15 = 6. The answer is 6.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. "
        "After eating 35, they had 74 - 35 = 39. The answer is 39.",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. "
        "How many lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. "
        "So he gave Denny 20 - 12 = 8. The answer is 8.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. "
        "How many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. "
        "5 + 4 = 9. The answer is 9.",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, from monday "
        "to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. "
        "So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29.",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. "
        "How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. "
        "After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33.",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. "
        "So she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8.",
    ),
)

_NUMBER = r"-?[$]?\d[\d,]*(?:\.\d+)?"
_STRICT = re.compile(rf"(?:[Tt]he answer is|####)\s*:?\s*\$?\s*({_NUMBER})")
_ANY_NUMBER = re.compile(_NUMBER)


def parse_number(text: str | None) -> Decimal | None:
    """'1,234.50' -> Decimal('1234.50'); '$5' -> 5; anything else -> None."""
    if text is None:
        return None
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def reference_answer(answer: str) -> Decimal:
    """The number after '#### ' in a GSM8K answer field."""
    if "####" not in answer:
        raise ValueError(f"GSM8K answer has no '####' line: {answer[-60:]!r}")
    value = parse_number(answer.rsplit("####", 1)[1])
    if value is None:
        raise ValueError(f"GSM8K answer is not a number: {answer.rsplit('####', 1)[1]!r}")
    return value


def extract_strict(output: str) -> Decimal | None:
    """The number stated as 'The answer is N' (or '#### N'), the last such statement; None if absent."""
    found = _STRICT.findall(output)
    return parse_number(found[-1]) if found else None


def extract_flexible(output: str) -> Decimal | None:
    """The last number anywhere in the output; None if there is none."""
    found = _ANY_NUMBER.findall(output)
    return parse_number(found[-1]) if found else None


def messages_for(question: str, shots: int) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for q, a in EXEMPLARS[:shots]:
        turns += [{"role": "user", "content": f"Question: {q}"}, {"role": "assistant", "content": a}]
    return turns + [{"role": "user", "content": f"Question: {question}"}]


class GSM8K(Benchmark):
    name = "gsm8k"

    def load(self, options: EvalOptions, config: Any) -> list[dict[str, Any]]:
        rows = local_rows(self.name, options)
        if rows is None:
            rows = _hub_rows() if options.hub else _package_rows()
        items = []
        for i, row in enumerate(rows):
            if not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
                raise OnemlError(f"gsm8k: row {i} needs string fields 'question' and 'answer'")
            try:
                items.append(
                    {"question": row["question"], "answer": row["answer"], "target": reference_answer(row["answer"])}
                )
            except ValueError as err:
                raise OnemlError(f"gsm8k: row {i}: {err}") from None
        shots = DEFAULT_SHOTS if options.shots is None else options.shots
        if not 0 <= shots <= len(EXEMPLARS):
            raise OnemlError(f"--shots: gsm8k takes 0 to {len(EXEMPLARS)} exemplars, got {shots}")
        return limited(items, options)

    def score(self, ctx: EvalContext, items: list[dict[str, Any]]) -> BenchResult:
        shots = DEFAULT_SHOTS if ctx.options.shots is None else ctx.options.shots
        prompts = [ctx.chat(messages_for(it["question"], shots)) for it in items]
        outputs = ctx.generate(prompts, DEFAULT_MAX_NEW_TOKENS, stop_strings=("Question:",))
        records = []
        for item, out in zip(items, outputs, strict=True):
            flexible, strict = extract_flexible(out.text), extract_strict(out.text)
            records.append(
                {
                    "question": item["question"],
                    "target": str(item["target"]),
                    "output": out.text,
                    "extracted": None if flexible is None else str(flexible),
                    "exact_match": flexible == item["target"],
                    "strict_match": strict == item["target"],
                }
            )
        n = max(len(records), 1)
        return BenchResult(
            metrics={
                "exact_match": sum(r["exact_match"] for r in records) / n,
                "strict_match": sum(r["strict_match"] for r in records) / n,
            },
            details={"shots": shots, "items": len(records), "records": records},
        )


def _package_rows() -> list[dict[str, Any]]:
    from oneml.data.sources import DATASETS

    return DATASETS.get("gsm8k").fetch("gsm8k", None)  # raw question/answer rows


def _hub_rows() -> list[dict[str, Any]]:
    return hub_rows(HUB_ID, "main", "test", "gsm8k", "drop --hub to use the copy from the package index")


BENCHMARKS.register("gsm8k", GSM8K, "GSM8K test set, 8-shot chain of thought, exact match on the final number")
