"""Any lm-eval-harness task on a run's model: ``oneml eval RUN --benchmarks lm-eval:<task>``.

The trained model is handed to lm-eval in memory (its HFLM wrapper accepts a model object; a peft model
with its adapter attached works as is), so nothing is merged or written first. Local task files come
from ``--lm-eval-include DIR`` (lm-eval's include_path): a YAML that names a local json/jsonl file runs
with no network. Task names are checked before the model is loaded. Metrics lm-eval marks
higher-is-better are recorded as scores, the others (perplexities) as lower-is-better.
"""

from __future__ import annotations

import logging
from typing import Any
from unittest.mock import patch

from oneml.errors import OnemlError, did_you_mean
from oneml.eval.benchmarks import Benchmark, BenchResult, EvalContext, EvalOptions


def _task_manager(options: EvalOptions) -> Any:
    from lm_eval.tasks import TaskManager

    include = options.lm_eval_include
    if include is not None and not include.is_dir():
        raise OnemlError(f"--lm-eval-include: not a folder: {include}")
    return TaskManager(include_path=str(include) if include else None, verbosity="ERROR")


class LmEvalTask(Benchmark):
    def __init__(self, task: str):
        self.task = task
        self.name = f"lm-eval:{task}"

    def load(self, options: EvalOptions, config: Any) -> Any:
        try:
            manager = _task_manager(options)
        except ImportError:
            raise OnemlError(f"{self.name}: lm-eval is not installed; pip install 'oneml[eval]'") from None
        known = manager.all_tasks
        if self.task not in known:
            raise OnemlError(f"--benchmarks: unknown lm-eval task {self.task!r}{did_you_mean(self.task, known)}")
        return manager

    def total(self, items: Any) -> int:
        return 1

    def score(self, ctx: EvalContext, items: Any) -> BenchResult:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM

        for name in ("lm-eval", "lm_eval"):
            logging.getLogger(name).setLevel(logging.ERROR)
        lm = HFLM(pretrained=ctx.model, tokenizer=ctx.tokenizer, batch_size=ctx.options.batch_size)
        # lm-eval records the git hash of the *current directory*: meaningless here, and outside a repository
        # git prints "fatal: not a git repository" on the user's terminal.
        with patch("lm_eval.evaluator.get_git_commit_hash", lambda: None):
            out = self._evaluate(simple_evaluate, lm, ctx, items)
        ctx.advance(1)
        return split_metrics(out["results"], out.get("higher_is_better", {}), out.get("n-samples", {}))

    def _evaluate(self, simple_evaluate, lm, ctx: EvalContext, items: Any) -> dict[str, Any]:
        return simple_evaluate(
            model=lm,
            tasks=[self.task],
            task_manager=items,
            limit=ctx.options.limit,
            num_fewshot=ctx.options.shots,
            log_samples=False,
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
            fewshot_random_seed=0,
        )


def split_metrics(results: dict[str, Any], higher: dict[str, Any], samples: dict[str, Any]) -> BenchResult:
    """lm-eval's results -> scores (higher is better) and lower-is-better values, per task and metric.

    Keys come as "acc,none" (metric, filter): the default filter "none" is dropped, others kept as a
    suffix; standard errors go to the details, not to the metrics.
    """
    metrics, lower, details = {}, {}, {}
    for task, values in results.items():
        for key, value in values.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or "," not in key:
                continue
            metric, filt = key.split(",", 1)
            name = (metric if filt == "none" else f"{metric}_{filt}") if len(results) == 1 else f"{task}/{metric}"
            if metric.endswith("_stderr"):
                details[name] = value
                continue
            better = higher.get(task, {}).get(metric, True)
            (metrics if better else lower)[name] = float(value)
    details["samples"] = samples
    return BenchResult(metrics=metrics, lower=lower, details=details)
