"""Pairwise judging: the judge prompt, reading the judge's answer, and judging every pair in both orders.

The prompt follows AlpacaEval 2.0's classifier annotator (Dubois et al. 2024, arXiv:2404.04475): the instruction
and the two outputs, each under a one-letter identifier ("m" and "M", one token each in common tokenizers), and
the identifier of the better one as the whole answer. Two changes: "tie" is allowed (the judge may find both
equally good; it counts 0.5), and the judge is told that length is no merit in itself.

Each pair is judged twice: the model's answer as "m" in the first position, then the opponent's. A judge that
favours a position or a letter so favours each side once. A reply is read by `parse_verdict`; a reply that names
neither identifier, or both, is a parse failure: kept with its raw text and counted, never read as a tie. A prompt
counts only when both of its judgments were read; the others are kept and counted, not scored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oneml.eval.judges import BudgetSpent, Judge, RequestFailed

FIRST, SECOND, TIE = "m", "M", "tie"
JUDGE_SYSTEM = (
    "You are a careful, impartial evaluator of AI assistants. You compare the outputs of two assistants to the same "
    "instruction and select the one a thoughtful human would prefer."
)
JUDGE_TEMPLATE = """I am ranking AI assistants by the quality of their answers. Below is an instruction given to two \
assistants and the output of each, labelled by the assistant's identifier.

## Instruction

{instruction}

## Outputs

Assistant "m":
\"\"\"
{first}
\"\"\"

Assistant "M":
\"\"\"
{second}
\"\"\"

## Task

Decide which output answers the instruction better: helpful, correct, relevant, clear and honest, as a human would \
prefer. A longer output is not better for being longer. Answer with the identifier of the better assistant and \
nothing else: m or M. Only if both outputs are equally good, answer: tie.

## Identifier of the better assistant"""
STOP_AFTER_FAILURES = 3
"""Judging stops after this many requests in a row failed for good (each after its retries): the judge is down."""

_ID = re.compile(r"(?<![\w'’])(m|M)(?![\w'’])")
_TIE = re.compile(r"\b(tie|draw)\b", re.IGNORECASE)


def parse_verdict(reply: str) -> str | None:
    """ "m", "M" or "tie" from a judge's reply; None when it names neither, or more than one.

    The first non-empty line is read first (most judges answer there), then the whole reply. Identifiers count as
    whole tokens only ("M", "'m'", "[[M]]", "Assistant m"), so the m of "Model" or "I'm" is no answer; a tie is the
    word tie (or draw), never read into "both are good".
    """
    lines = [line for line in reply.splitlines() if line.strip()]
    for text in (lines[0], reply) if lines else ():
        ids, tie = set(_ID.findall(text)), bool(_TIE.search(text))
        if len(ids) == 1 and not tie:
            return ids.pop()
        if tie and not ids:
            return TIE
        if ids or tie:
            return None  # both identifiers, or an identifier and a tie: ambiguous
    return None


def score_of(verdict: str | None, model_first: bool) -> float | None:
    """1 when the model's answer won, 0 when the opponent's did, 0.5 for a tie, None when unread."""
    if verdict is None:
        return None
    if verdict == TIE:
        return 0.5
    return 1.0 if (verdict == FIRST) == model_first else 0.0


def render_conversation(messages: list[dict[str, str]]) -> str:
    """One user turn as its text; a longer conversation as a transcript."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def judge_messages(instruction: str, first: str, second: str) -> list[dict[str, str]]:
    text = JUDGE_TEMPLATE.format(instruction=instruction, first=first, second=second)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": text}]


@dataclass
class Pair:
    """One prompt and the two answers to compare."""

    prompt: list[dict[str, str]]
    """The conversation as the data has it (before the run's system prompt)."""
    instruction: str
    """What the judge reads as the instruction."""
    model_answer: str
    opponent_answer: str
    extra: dict[str, Any] = field(default_factory=dict)
    """Kept with the record (an MT-Bench category, say)."""
    judgments: list[dict[str, Any]] = field(default_factory=list)

    def conversations(self) -> list[tuple[bool, list[dict[str, str]]]]:
        """(model first?, judge conversation) for both orders."""
        a, b = self.model_answer, self.opponent_answer
        return [(True, judge_messages(self.instruction, a, b)), (False, judge_messages(self.instruction, b, a))]

    @property
    def preference(self) -> float | None:
        scores = [j["score"] for j in self.judgments]
        return sum(scores) / 2 if len(scores) == 2 and None not in scores else None

    @property
    def status(self) -> str:
        if self.preference is not None:
            return "judged"
        if any(j["error"] for j in self.judgments):
            return "request_failure"
        if any(j["verdict"] is None and j["raw"] is not None for j in self.judgments):
            return "parse_failure"
        return "not_judged"

    def record(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "model_answer": self.model_answer,
            "opponent_answer": self.opponent_answer,
            "model_chars": len(self.model_answer),
            "opponent_chars": len(self.opponent_answer),
            **self.extra,
            "judgments": self.judgments,
            "preference": self.preference,
            "status": self.status,
        }


def judge_pairs(pairs: list[Pair], judge: Judge, advance: Callable[[int], None]) -> str | None:
    """Judge every pair in both orders (filling ``pair.judgments``); returns why judging stopped early, or None."""
    queue = [(pair, first, conv) for pair in pairs for first, conv in pair.conversations()]
    failures = 0
    for start in range(0, len(queue), max(judge.batch, 1)):
        chunk = queue[start : start + max(judge.batch, 1)]
        replies = judge.complete([conv for _, _, conv in chunk])
        for (pair, first, _), reply in zip(chunk, replies, strict=True):
            if isinstance(reply, BudgetSpent):
                return f"the request budget ({judge.budget.left} requests) was spent"
            if isinstance(reply, RequestFailed):
                pair.judgments.append(_judgment(first, None, str(reply)))
                failures += 1
                if failures >= STOP_AFTER_FAILURES:
                    return f"{failures} judge requests in a row failed (last: {reply})"
                continue
            failures = 0
            pair.judgments.append(_judgment(first, str(reply), None))
        advance(len(chunk))
    return None


def _judgment(model_first: bool, raw: str | None, error: str | None) -> dict[str, Any]:
    verdict = parse_verdict(raw) if raw is not None else None
    return {
        "order": "model_first" if model_first else "opponent_first",
        "raw": raw,
        "verdict": verdict,
        "score": score_of(verdict, model_first),
        "error": error,
    }


def tally(pairs: list[Pair]) -> dict[str, Any]:
    """Counts for the record: what was judged, what failed and why, and how the judge used the two positions."""
    judgments = [j for p in pairs for j in p.judgments]
    read = [j for j in judgments if j["verdict"] is not None]
    prefs = [p.preference for p in pairs if p.preference is not None]
    statuses = [p.status for p in pairs]
    return {
        "prompts": len(pairs),
        "prompts_judged": statuses.count("judged"),
        "prompts_with_parse_failure": statuses.count("parse_failure"),
        "prompts_with_request_failure": statuses.count("request_failure"),
        "prompts_not_judged": statuses.count("not_judged"),
        "judgments": len(judgments),
        "parse_failures": sum(j["verdict"] is None and j["raw"] is not None for j in judgments),
        "request_failures": sum(j["error"] is not None for j in judgments),
        "ties": sum(j["verdict"] == TIE for j in read),
        "first_position_chosen": (sum(j["verdict"] == FIRST for j in read) / len(read)) if read else None,
        "wins": sum(p > 0.5 for p in prefs),
        "losses": sum(p < 0.5 for p in prefs),
        "draws": sum(p == 0.5 for p in prefs),
    }
