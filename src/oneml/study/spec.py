"""The study YAML: a base run config, named tracks (each a grid over dotted keys), seeds, a budget,
executor settings and optional successive halving. Validated at load; errors name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from oneml.config import load_yaml
from oneml.errors import OnemlError
from oneml.schema import Section, validate


class Track(Section):
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """Dotted config keys and the values to try, e.g. {method.name: [lora, pissa], method.r: [16, 32]}."""
    base: dict[str, Any] = Field(default_factory=dict)
    """Overrides of the study's base for this track only (a run config mapping)."""

    @field_validator("grid")
    @classmethod
    def _values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"{key}: needs at least one value")
        return grid


class Budget(Section):
    max_steps: int = Field(gt=0)
    """Optimizer steps of every run (sets train.max_steps)."""


class ExecutorSettings(Section):
    name: str = "local"
    """Where trials run: local (this machine, --workers processes) or ray."""
    workers: int = Field(default=1, gt=0)
    """Trials run at the same time (local: processes)."""
    gpu_fraction: float | None = Field(default=None, gt=0, le=1)
    """Share of one GPU each trial may use (several trials per GPU when below 1)."""
    ray_address: str | None = None
    """An existing Ray cluster to use (default: start a local one)."""
    cpus_per_trial: float = Field(default=1, gt=0)
    """ray: CPUs each trial reserves (Ray places a trial only where that many are free)."""
    resources: dict[str, float] = Field(default_factory=dict)
    """ray: custom resources each trial reserves, e.g. {big_memory: 1} for nodes started with
    `ray start --resources '{"big_memory": 4}'`."""

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from oneml.study.executors import EXECUTORS

        if name not in EXECUTORS:
            raise ValueError(f"must be one of {', '.join(EXECUTORS.names())}, got {name!r}")
        return name


RUNG_METRICS: dict[str, tuple[str, ...]] = {
    "sft": ("eval_loss", "eval_perplexity", "eval_token_accuracy"),
    "preference": ("eval_loss", "eval_preference_accuracy", "eval_reward_margin"),
}
"""The quality metrics a paused run records at a rung, by objective data kind: its evaluation (the token
evaluation of eval/perplexity.py; the preference scores of objectives/dpo.py and orpo.py) whose direction the
analysis registry knows. The other numbers a rung records (eval seconds, pair counts, ...) rank nothing."""


class Halving(Section):
    min_steps: int = Field(gt=0)
    """Steps of the first rung."""
    eta: int = Field(default=3, ge=2)
    """Keep the best 1/eta configurations at each rung; rungs grow by eta."""
    metric: str = "eval_loss"
    """Metric that ranks configurations, averaged over seeds, in its own direction (eval_loss lower is better,
    eval_token_accuracy higher)."""

    @field_validator("metric")
    @classmethod
    def _recorded(cls, key: str) -> str:
        known = list(dict.fromkeys(k for keys in RUNG_METRICS.values() for k in keys))
        if key not in known:
            raise ValueError(f"must be one of {', '.join(known)}")
        return key


class EvalStage(Section):
    benchmarks: list[str] = Field(min_length=1)
    """Benchmarks scored on every finished run after training, as `oneml eval --benchmarks` names them."""
    limit: int | None = Field(default=None, gt=0)
    """Score at most this many items per benchmark."""
    shots: int | None = Field(default=None, ge=0)
    """Few-shot examples where a benchmark takes them."""
    max_new_tokens: int | None = Field(default=None, gt=0)
    """Generation budget per item."""
    batch_size: int = Field(default=8, gt=0)
    """Prompts generated or scored together."""


class StudySpec(Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
    """Study name; its runs are tagged oneml.study=<name> (it names folders, hence no '/' and no leading '.')."""
    base: dict[str, Any] = Field(default_factory=dict)
    """The run config every trial starts from (as in `oneml train` YAML)."""
    tracks: dict[str, Track] = Field(default_factory=lambda: {"main": Track()})
    """Named tracks; each expands its grid x seeds."""
    seeds: list[int] = Field(default_factory=lambda: [0])
    """Seeds of every configuration (train.seed)."""
    budget: Budget | None = None
    """Steps per run (default: the base's train.max_steps)."""
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    """Executor settings; the CLI options override them."""
    halving: Halving | None = None
    """Successive halving: prune poor configurations at rungs instead of running every one to the end."""
    eval: EvalStage | None = None
    """An evaluation stage: benchmarks run on each finished run (their scores join the report)."""
    save_steps: int | None = Field(default=None, gt=0)
    """Checkpoint interval of every run, so an interrupted run resumes (default: about a quarter of the budget)."""
    margin: str | float | dict[str, float] | None = None
    """Equivalence margin of the decision guide: '1%' (of the best mean) or metric units (0.02); recorded with
    the study, so its reports use it unless `oneml report --margin` says otherwise. Default 1%."""

    @field_validator("margin")
    @classmethod
    def _margin(cls, margin):
        from oneml.analysis.verdicts import parse_margin

        if margin is not None:
            try:
                parse_margin(margin)
            except OnemlError as err:
                raise ValueError(str(err).removeprefix("margin: ")) from None
        return margin

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError("must be a non-empty list of distinct integers")
        return seeds

    @model_validator(mode="after")
    def _rungs(self) -> StudySpec:
        if self.halving and self.budget and self.halving.min_steps >= self.budget.max_steps:
            raise ValueError(f"halving.min_steps must be below budget.max_steps ({self.budget.max_steps})")
        return self


def load_study(path: str | Path) -> StudySpec:
    data = load_yaml(path)
    try:
        return validate(StudySpec, data)
    except OnemlError as err:
        raise OnemlError(f"{path}: {err}") from None
