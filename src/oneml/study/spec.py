"""The study YAML: a base run config, named tracks (each a grid over dotted keys), seeds, a budget,
executor settings, optional successive halving, per-configuration tuning (`tune:`) and stages (a track
that starts `from:` another track's result). Validated at load; errors name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from oneml.config import load_yaml
from oneml.errors import OnemlError
from oneml.objectives import OBJECTIVES, ObjectiveConfig
from oneml.schema import Section, validate


class From(Section):
    track: str
    """The track whose result this track starts from (it runs first)."""
    pick: Literal["best", "each"] = "best"
    """best: the source track's best configuration by `metric` on the validation rows (mean over its finished
    seeds), its lowest finished seed's run; each: one stage per source configuration (its lowest finished seed)."""
    metric: str | None = None
    """Validation metric that picks `best` (default: tune.metric when tuned, else halving.metric, else eval_loss)."""

    @field_validator("metric")
    @classmethod
    def _validation(cls, key: str | None) -> str | None:
        return key if key is None else _rung_metric(key)


class Track(Section):
    model_config = ConfigDict(populate_by_name=True)

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """Dotted config keys and the values to try, e.g. {method.name: [lora, pissa], method.r: [16, 32]}."""
    base: dict[str, Any] = Field(default_factory=dict)
    """Overrides of the study's base for this track only (a run config mapping)."""
    from_: From | None = Field(default=None, alias="from")
    """A stage: start every run from another track's result, e.g. {track: sft, pick: best} (sets model.adapter
    to that run; this track waits for it)."""

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


RUNG_METRICS: dict[str, tuple[str, ...]] = {ObjectiveConfig.data_kind: ObjectiveConfig.eval_metrics} | {
    e.value.data_kind: e.value.eval_metrics for e in OBJECTIVES.entries()
}
"""The quality metrics a paused run records at a rung, by objective data kind: its evaluation (the token
evaluation of objectives/token_eval.py; the pair scores of objectives/preference.py and reward.py; KTO's answer
scores, objectives/unpaired.py) whose direction the analysis registry knows (each objective's ``eval_metrics``).
The other numbers a rung records (eval seconds, pair counts, ...) rank nothing."""


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
        return _rung_metric(key)


def _rung_metric(key: str) -> str:
    """A metric some objective records at a rung and at the end, on the validation rows (never a test_* one)."""
    known = list(dict.fromkeys(k for keys in RUNG_METRICS.values() for k in keys))
    if key not in known:
        raise ValueError(f"must be one of {', '.join(known)}")
    return key


STUDY_KEYS = ("train.max_steps", "train.seed", "train.save_steps")
"""Run config keys the study sets itself (budget, seeds, save_steps): no grid of tune: may set them."""


class Tune(Section):
    grid: dict[str, list[Any]]
    """Dotted config keys and candidate values, e.g. {train.learning_rate: [5e-5, 1e-4, 2e-4]}: every configuration
    of every tuned track gets its own best combination (on the validation rows), then runs it with every study seed."""
    seeds: list[int] = Field(default_factory=lambda: [0])
    """Seeds of the tuning runs; a candidate's score is its mean over them."""
    budget: Budget | None = None
    """Steps of each tuning run (default: the study's budget)."""
    metric: str = "eval_loss"
    """Validation metric that picks the best value, in its own direction (eval_loss lower, eval_token_accuracy
    higher is better)."""
    halving: Halving | None = None
    """Successive halving among each configuration's candidates (ranks by tune.metric)."""
    tracks: list[str] | None = None
    """Tracks to tune (default: every track)."""

    @field_validator("grid")
    @classmethod
    def _grid(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not grid:
            raise ValueError("needs at least one key and its candidate values")
        for key, values in grid.items():
            if not values:
                raise ValueError(f"{key}: needs at least one value")
            if key in STUDY_KEYS:
                raise ValueError(f"{key}: set by the study (budget, seeds, save_steps), not tunable")
        return grid

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError("must be a non-empty list of distinct integers")
        return seeds

    @field_validator("metric")
    @classmethod
    def _metric(cls, key: str, info: ValidationInfo) -> str:
        from oneml.analysis.metrics import defines_loss, is_loss

        key = _rung_metric(key)
        defining = sorted(k for k in info.data.get("grid") or {} if defines_loss(k))
        if defining and is_loss(key):
            raise ValueError(
                f"{key} is defined by {', '.join(defining)}, which this tuning varies, so the candidates' losses do "
                "not compare; pick on eval_preference_accuracy (preference objectives) or eval_token_accuracy"
            )
        return key

    @field_validator("halving")
    @classmethod
    def _halving_metric(cls, halving: Halving | None, info: ValidationInfo) -> Halving | None:
        """Halving inside tuning ranks by the tuning metric; a different one given explicitly is a contradiction."""
        metric = info.data.get("metric", "eval_loss")
        if halving is None or halving.metric == metric:
            return halving
        if "metric" in halving.model_fields_set:
            raise OnemlError(f"tune.halving.metric: must be tune.metric ({metric}) or left out, got {halving.metric!r}")
        return halving.model_copy(update={"metric": metric})


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
    judge: str | None = None
    """The judge of winrate / mt-bench: a model (preset, hub id, directory) or an endpoint http://host:port/v1."""
    against: str = "base"
    """What winrate / mt-bench compare each run with: base, reference, or a run id."""
    judge_model: str | None = None
    """The endpoint's model (default: the first it lists)."""
    judge_key_env: str | None = None
    """Environment variable holding the endpoint's API key."""
    judge_budget: int | None = Field(default=None, gt=1)
    """At most this many judge requests per run (retries count)."""


class SequentialSeeds(Section):
    """`seeds: {initial: 3, max: 10, until: decided}`: seeds added in rounds, only to the configurations the
    decision guide still needs, until it is decided (study/sequential.py; the looks' error is corrected by alpha
    spending, analysis/sequential.py). Iterating gives the first round's seeds, as a seed list would."""

    initial: int
    """Seeds of every configuration in the first round; two at least, so that a spread can be measured."""
    max: int = Field(gt=0, le=1000)
    """The most seeds any configuration gets."""
    until: Literal["decided"] = "decided"
    """decided: after each round add seeds to the configurations named by a row of the guide that more seeds
    could still decide; stop when none is left or at max. Needs the study's margin:."""
    start: int = Field(default=0, ge=0)
    """The first seed value: a configuration with n seeds has seeds start .. start+n-1 (shared, so they pair)."""
    step: int | Literal["planned"] = "planned"
    """Seeds added per round: a number, or planned (straight to the seeds the open rows need, at most max)."""

    @field_validator("initial")
    @classmethod
    def _initial(cls, initial: int) -> int:
        if initial < 2:
            raise ValueError("must be at least 2 (one seed measures no spread)")
        return initial

    @field_validator("step")
    @classmethod
    def _step(cls, step: int | str) -> int | str:
        if isinstance(step, int) and step < 1:
            raise ValueError("must be a positive integer or 'planned'")
        return step

    @model_validator(mode="after")
    def _bounds(self) -> SequentialSeeds:
        if self.initial > self.max:
            raise OnemlError(f"seeds.initial: must be at most seeds.max ({self.max}), got {self.initial}")
        return self

    def __iter__(self):  # the first round, wherever a seed list is iterated (expansion, export)
        return iter(self.values(self.initial))

    def values(self, n: int) -> list[int]:
        """The seeds of a configuration with ``n`` of them."""
        return list(range(self.start, self.start + n))


class StudySpec(Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
    """Study name; its runs are tagged oneml.study=<name> (it names folders, hence no '/' and no leading '.')."""
    base: dict[str, Any] = Field(default_factory=dict)
    """The run config every trial starts from (as in `oneml train` YAML)."""
    tracks: dict[str, Track] = Field(default_factory=lambda: {"main": Track()})
    """Named tracks; each expands its grid x seeds."""
    seeds: list[int] | SequentialSeeds = Field(default_factory=lambda: [0])
    """Seeds of every configuration (train.seed): a list, or sequential {initial: 3, max: 10, until: decided}."""
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
    tune: Tune | None = None
    """Per-configuration tuning: each configuration's own best value of the tune.grid keys, chosen on the
    validation rows by short tuning runs (tagged oneml.tuning, never in the comparison), then its final runs."""
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

    @field_validator("seeds", mode="plain")
    @classmethod
    def _seeds(cls, seeds: Any) -> list[int] | SequentialSeeds:
        """A list as before; a mapping is sequential seeds, its errors named seeds.<key>."""
        from pydantic import TypeAdapter, ValidationError

        if isinstance(seeds, SequentialSeeds):
            return seeds
        if isinstance(seeds, dict):
            return validate(SequentialSeeds, seeds, prefix="seeds")
        try:
            values = TypeAdapter(list[int]).validate_python(seeds)
        except ValidationError:
            values = []
        if not values or len(set(values)) != len(values):
            raise ValueError("must be a non-empty list of distinct integers, or {initial: 3, max: 10, until: decided}")
        return values

    @model_validator(mode="after")
    def _sequential(self) -> StudySpec:
        """Rounds stop when the guide is decided; "equivalent" needs a margin the study states, not a default."""
        if not isinstance(self.seeds, SequentialSeeds):
            return self
        if self.seeds.until == "decided" and self.margin is None:
            raise OnemlError("seeds.until: 'decided' needs margin: (e.g. margin: 1%)")
        if self.halving is not None:
            raise OnemlError("seeds: sequential seeds cannot be combined with halving (use a seed list)")
        reach = self.seeds.values(self.seeds.max)
        shared = sorted(set(self.tune.seeds) & set(reach)) if self.tune is not None else []
        if shared:  # a later round's run would be the tuning run itself (the same config and seed)
            raise OnemlError(
                f"tune.seeds: seed {shared[0]} is one the sequential rounds may use ({reach[0]}..{reach[-1]}); "
                f"tune on seeds outside that range"
            )
        return self

    @model_validator(mode="after")
    def _rungs(self) -> StudySpec:
        if self.halving and self.budget and self.halving.min_steps >= self.budget.max_steps:
            raise ValueError(f"halving.min_steps must be below budget.max_steps ({self.budget.max_steps})")
        return self

    @model_validator(mode="after")
    def _stages_and_tuning(self) -> StudySpec:
        from oneml.study.stages import check_sources
        from oneml.study.tune import check_tune

        check_sources(self)
        if self.tune is not None:
            check_tune(self)
        return self


def load_study(path: str | Path) -> StudySpec:
    data = load_yaml(path)
    try:
        return validate(StudySpec, data)
    except OnemlError as err:
        raise OnemlError(f"{path}: {err}") from None


def with_tracking_uri(spec: StudySpec, uri: str | None) -> StudySpec:
    """The study with every trial recorded to ``uri``: the command line's --tracking-uri wins over the
    tracking.uri of the YAML's base and of any track's base (where a result is recorded is no part of a run id)."""
    if not uri:
        return spec

    def pointed(base: dict[str, Any]) -> dict[str, Any]:
        tracking = base.get("tracking") or {}
        if not isinstance(tracking, dict):
            return base  # refused, with its field named, when the trials are expanded
        return base | {"tracking": tracking | {"uri": uri}}

    tracks = {
        name: track.model_copy(update={"base": pointed(track.base)}) if "tracking" in track.base else track
        for name, track in spec.tracks.items()
    }
    return spec.model_copy(update={"base": pointed(spec.base), "tracks": tracks})


def study_tracking_uri(spec: StudySpec) -> str | None:
    """The tracking.uri the study's base names, if any (tracks may name their own)."""
    tracking = spec.base.get("tracking") or {}
    return tracking.get("uri") if isinstance(tracking, dict) else None
