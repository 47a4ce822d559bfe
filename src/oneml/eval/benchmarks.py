"""The benchmark catalogue: what `oneml eval --benchmarks` accepts.

A benchmark loads its items first (so a missing dataset or an unreachable hub fails before any model is
loaded, and nothing is recorded), then scores a model. Its metrics are recorded on the run's MLflow record
under ``bench/<name>/<metric>`` when higher is better (the analysis and the decision guide read that prefix),
``bench-lower/<name>/<metric>`` when lower is better, and cost metrics under their own names.
Any lm-eval task runs as ``lm-eval:<task>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oneml.errors import OnemlError
from oneml.eval.judges import JudgeOptions
from oneml.registry import Registry

LM_EVAL_PREFIX = "lm-eval:"


@dataclass
class EvalOptions:
    limit: int | None = None
    """Score at most this many items per benchmark (None: all)."""
    shots: int | None = None
    """Few-shot examples where a benchmark takes them (None: the benchmark's default)."""
    max_new_tokens: int | None = None
    """Generation budget (None: the benchmark's default)."""
    batch_size: int = 8
    data: dict[str, Path] = field(default_factory=dict)
    """Local files standing in for a benchmark's data source (name -> file)."""
    hub: bool = False
    """Read GSM8K from the Hugging Face hub instead of the package index copy."""
    lm_eval_include: Path | None = None
    """A folder of lm-eval task YAML files (local tasks)."""
    judge: JudgeOptions | None = None
    """The judge of the pairwise benchmarks (winrate, mt-bench) and what they compare against."""


@dataclass
class EvalContext:
    """What a benchmark scores: the trained model, laid out the way it was trained."""

    model: Any
    tokenizer: Any
    template: str
    """The run's chat template (Jinja)."""
    end_ids: list[int]
    config: Any
    """The run's RunConfig."""
    method: Any
    """The run's MethodConfig (for merging in the inference-cost benchmark)."""
    options: EvalOptions
    advance: Callable[[int], None] = lambda n: None
    """Progress callback: n more items done."""
    bar: Callable[[str, int], Callable[[int], None]] = lambda name, total: lambda n: None
    """A further progress bar (description, total) for a benchmark with several stages; returns its callback."""

    def chat(self, messages: list[dict[str, str]]) -> str:
        """A prompt laid out as in training: the run's system prompt (if any), its template, the answer cue."""
        from oneml.data.prepare import with_system_prompt
        from oneml.eval.generate import chat_prompt

        system = getattr(getattr(self.config, "data", None), "system_prompt", None)
        return chat_prompt(self.tokenizer, self.template, with_system_prompt(messages, system))

    def generate(self, prompts: list[str], default_max_new_tokens: int, stop_strings: tuple[str, ...] = ()) -> list:
        """Greedy generations for laid-out prompts, within --max-new-tokens (else the benchmark's default)."""
        from oneml.eval.generate import generate

        return generate(
            self.model,
            self.tokenizer,
            prompts,
            end_ids=self.end_ids,
            max_new_tokens=self.options.max_new_tokens or default_max_new_tokens,
            batch_size=self.options.batch_size,
            stop_strings=stop_strings,
            progress=self.advance,
        )


@dataclass
class BenchResult:
    metrics: dict[str, float]
    """Higher-is-better scores (recorded as bench/<name>/<metric>)."""
    lower: dict[str, float] = field(default_factory=dict)
    """Lower-is-better scores (bench-lower/<name>/<metric>)."""
    costs: dict[str, float] = field(default_factory=dict)
    """Cost metrics, recorded under these exact names."""
    details: dict[str, Any] = field(default_factory=dict)
    """Everything worth keeping: per-item outputs, which checks were scored, settings."""
    section: str | None = None
    """Set when the result is one of several kept side by side in the benchmark's file (a win rate against each
    opponent): the file keeps a section per key, and a new result replaces only its own."""


class Benchmark:
    """Base of every benchmark. Subclasses set ``name`` and implement `load` and `score`."""

    name: str = ""
    uses_judge: bool = False
    """Scored by a judge (--judge): the pairwise benchmarks."""

    def load(self, options: EvalOptions, config: Any) -> Any:
        """The items to score; raise OnemlError (one line) when they cannot be had."""
        raise NotImplementedError

    def total(self, items: Any) -> int:
        """How many progress steps scoring takes."""
        return len(items)

    def score(self, ctx: EvalContext, items: Any) -> BenchResult:
        raise NotImplementedError


BENCHMARKS: Registry[Callable[[], Benchmark]] = Registry("benchmark")


def resolve_benchmarks(names: list[str]) -> list[Benchmark]:
    """Benchmarks for ``names`` (catalogue names or ``lm-eval:<task>``), in order, without repeats."""
    import oneml.eval.bench  # noqa: F401 - each module there registers one benchmark

    out: list[Benchmark] = []
    seen: set[str] = set()
    for raw in names:
        name = raw.strip()
        if not name or name in seen:
            continue
        seen.add(name)
        if name.startswith(LM_EVAL_PREFIX):
            from oneml.eval.lmeval import LmEvalTask

            task = name[len(LM_EVAL_PREFIX) :]
            if not task:
                raise OnemlError("--benchmarks: 'lm-eval:' needs a task name, e.g. lm-eval:hellaswag")
            out.append(LmEvalTask(task))
            continue
        out.append(BENCHMARKS.get(name)())
    if not out:
        raise OnemlError("--benchmarks: no benchmark named; choose from " + ", ".join(BENCHMARKS.names()))
    return out


def check_judge_used(benchmarks: list[Benchmark], options: EvalOptions) -> None:
    """A judge given to benchmarks that take none would be silently ignored: refused instead."""
    if options.judge is not None and not any(b.uses_judge for b in benchmarks):
        judged = ", ".join(e.name for e in BENCHMARKS.entries() if getattr(e.value, "uses_judge", False))
        raise OnemlError(f"--judge: none of the benchmarks named takes a judge; add one of: {judged}")


def limited(items: list[Any], options: EvalOptions) -> list[Any]:
    return items if options.limit is None else items[: options.limit]


def hub_rows(hub_id: str, subset: str | None, split: str, benchmark: str, way_out: str) -> list[dict[str, Any]]:
    """A benchmark's rows from the Hugging Face hub; any failure is one line naming the way out."""
    import datasets

    try:
        return datasets.load_dataset(hub_id, subset, split=split).to_list()
    except Exception as err:  # offline, blocked, renamed: one line for the user
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        message = f"{benchmark}: could not load {hub_id} from the Hugging Face hub ({first}); {way_out}"
        raise OnemlError(message) from None


def local_rows(name: str, options: EvalOptions) -> list[dict[str, Any]] | None:
    """The rows of a local stand-in file given with ``--data name=FILE``, or None."""
    from oneml.data.sources import read_file

    path = options.data.get(name)
    if path is None:
        return None
    if not Path(path).is_file():
        raise OnemlError(f"--data: {name} file not found: {path}")
    return read_file(Path(path))
