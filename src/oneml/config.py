"""RunConfig = model + method + objective + data + train + tracking + distributed.

Loaded from YAML (``oneml train run.yaml``) with dotted overrides (``--set method.r=8``), or built in
Python (``RunConfig(method=LoRAConfig(r=8))``). Everything is validated at load; an error names the
field and the allowed values.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationInfo, field_validator, model_validator

from oneml.data.formats import FORMATS
from oneml.data.templates import LABELERS
from oneml.distributed.strategies import STRATEGIES
from oneml.errors import OnemlError
from oneml.methods import METHODS, MethodConfig
from oneml.objectives import OBJECTIVES, ObjectiveConfig
from oneml.schema import Section, validate


class ModelConfig(Section):
    name: str = "smollm2-135m"
    """A preset from `oneml models`, a Hugging Face hub id, or a local directory."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) for hub models."""
    trust_remote_code: bool = False
    """Run the model repository's own Python code. Off unless you trust the repository."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype: auto = bfloat16 on a GPU that supports it, float32 on CPU."""
    init: Literal["pretrained", "random"] = "pretrained"
    """random: build the architecture with random weights (benchmarks, when weights are not at hand)."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Architecture config overrides for random init, e.g. {num_hidden_layers: 2}."""
    tokenizer: str | None = None
    """Tokenizer to use instead of the model's own: a preset, hub id or directory."""
    adapter: str | None = None
    """Start from an earlier run's result: its run id (under tracking.root) or a directory; it is merged into
    the base before this run's method applies (so DPO's reference is that starting point)."""
    attn_implementation: str = "auto"
    """Attention kernels: auto (transformers' choice, sdpa), eager, sdpa, flex_attention (CUDA), flash_attention_2,
    flash_attention_3 (CUDA, bf16/fp16, their packages) or a hub kernel org/name (the kernels package). Packing
    stays exact with each (block masks or cumulative lengths); one that cannot run here is refused in one line."""

    @field_validator("attn_implementation")
    @classmethod
    def _attention(cls, value: str) -> str:
        from oneml.models.attention import check_name

        return check_name(value)


class MixEntry(Section):
    """One dataset of a mix (data.datasets)."""

    dataset: str = Field(min_length=1)
    """A dataset from `oneml datasets`, or a local .json/.jsonl/.csv/.parquet file."""
    weight: float = 1.0
    """Its share of the mix: weight / sum of the weights (the source that runs out first sets the mix's size)."""
    max_samples: int | None = Field(default=None, gt=0)
    """Use at most this many of its usable rows (a seeded shuffle first), before mixing."""
    format: Literal[("auto", *FORMATS.names())] | None = None  # type: ignore[valid-type]
    """Its row format (default: data.format)."""
    split: str | None = None
    """Its split, for hub datasets (default: data.split, else the catalogue's)."""

    @field_validator("weight")
    @classmethod
    def _positive(cls, value: float) -> float:
        # pydantic's gt=0 would be reported as "a positive integer" for `weight: 0` (the field is in a list)
        if value <= 0:
            raise ValueError(f"must be a positive number, got {value:g}")
        return value


class DataConfig(Section):
    dataset: str = "alpaca-demo"
    """A dataset from `oneml datasets`, or a local .json/.jsonl/.csv/.parquet file. With data.datasets it is set
    for you, to a label of the mix (e.g. alpaca-demo*2+gsm8k*1)."""
    datasets: list[MixEntry] | None = None
    """Several datasets mixed in one run, instead of data.dataset: [{dataset, weight (default 1), max_samples, format,
    split}]. Examples are drawn in proportion to the weights without repeating any (weights 1 and 1 over 999 and
    300 rows give 300 + 300), in an order fixed by split_seed, then split as one dataset; data.stats.sources
    records each one's rows, usable rows and rows used."""
    format: Literal[("auto", *FORMATS.names())] = "auto"  # type: ignore[valid-type]
    """Row format; auto detects it from the fields of the first row."""
    split: str | None = None
    """Split to read for hub datasets (default: the catalogue's)."""
    max_samples: int | None = Field(default=None, gt=0)
    """Use at most this many rows (taken after a seeded shuffle)."""
    eval_fraction: float = Field(default=0.1, gt=0, lt=1)
    """Share of rows held out for evaluation."""
    eval_size: int | None = Field(default=None, gt=0)
    """Number of rows held out for evaluation (overrides eval_fraction)."""
    test_fraction: float | None = Field(default=None, gt=0, lt=1)
    """Share of rows held out as a test split: scored once, after training (test_* metrics), and read by nothing
    that selects (halving rungs read eval_*). Default: no test split."""
    test_size: int | None = Field(default=None, gt=0)
    """Number of rows held out as a test split (overrides test_fraction); taken before the eval rows."""
    split_seed: int = 42
    """Seed of the train/eval/test split; fixed apart from the run seed so that every run is scored on the same
    rows."""
    max_length: int = Field(default=512, gt=8)
    """Longest tokenized example; longer ones are truncated (SFT: dropped if no response token is left; preference
    and KTO: the prompt keeps its end and the answers their start, see max_completion_length)."""
    max_completion_length: int | None = Field(default=None, gt=0)
    """Preference and KTO data: what an answer keeps when prompt + answer exceed max_length (the prompt is cut from
    the left to the rest; a short prompt leaves its room to the answers). Default: half of max_length, as TRL's
    defaults (max_prompt_length 512 of max_length 1024)."""
    loss_on: Literal[tuple(LABELERS)] = "response"  # type: ignore[valid-type]
    """Compute the loss on the assistant responses only (default) or on every token; either way without the turns a
    row marks as not learned (loss_weight: 0, train: false, weight: 0)."""
    system_prompt: str | None = None
    """System message put before every conversation that has none."""
    chat_template: str | None = None
    """Chat template when the tokenizer has none (or to replace it): "chatml" or a Jinja template string."""
    packing: bool = True
    """SFT: padding-free batches (examples concatenated into one row, position ids restarting per example, no
    attention across examples; same loss). Switched off, with the reason recorded, where it is not exact."""

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        """data.dataset or data.datasets, not both; with datasets, dataset becomes the mix's label (tags, tables)."""
        if not isinstance(data, dict) or data.get("datasets") is None:
            return data
        label = _mix_label(data["datasets"])
        if "dataset" in data and data["dataset"] != label:  # a saved config holds the label: that is consistent
            raise OnemlError(
                f"data.datasets: give data.dataset or data.datasets, not both (data.dataset is {data['dataset']!r})"
            )
        return {**data, "dataset": label} if label is not None else data

    @model_validator(mode="after")
    def _lengths(self) -> DataConfig:
        if self.datasets is not None and not self.datasets:
            raise OnemlError("data.datasets: must list at least one dataset, e.g. [{dataset: alpaca-demo, weight: 1}]")
        if self.max_completion_length is not None and self.max_completion_length >= self.max_length:
            raise OnemlError(
                f"data.max_completion_length: must be below data.max_length ({self.max_length}), "
                f"got {self.max_completion_length}"
            )
        return self


def _mix_label(entries: Any) -> str | None:
    """``a*2+b*1`` for a list of mix entries; None when the list is malformed (its validation then says why)."""
    if not isinstance(entries, list):
        return None
    parts = []
    for entry in entries:
        entry = entry.model_dump() if isinstance(entry, MixEntry) else entry
        weight = entry.get("weight", 1.0) if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("dataset"), str) or not _is_number(weight):
            return None
        parts.append(f"{entry['dataset']}*{weight:g}")
    return "+".join(parts) or None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class EarlyStoppingConfig(Section):
    """Stop when the validation metric stops improving, and keep the best evaluated step's weights."""

    patience: int = Field(gt=0)
    """Evaluations (every train.eval_steps) without an improvement before the run stops."""
    min_delta: float = Field(default=0.0, ge=0)
    """An improvement is a change in the metric's good direction by more than this (in the metric's units)."""
    metric: str = "eval_loss"
    """The validation metric watched, in its own direction (eval_loss lower is better, eval_token_accuracy
    higher): one the run's objective records (SFT: eval_loss, eval_perplexity, eval_token_accuracy; DPO/ORPO:
    eval_loss, eval_preference_accuracy, eval_reward_margin). Never a test_* metric: selection reads validation
    rows only."""


class TrainConfig(Section):
    max_steps: int = Field(default=100, gt=0)
    """Optimizer steps."""
    batch_size: int = Field(default=4, gt=0)
    """Examples per device per micro-batch."""
    grad_accum: int = Field(default=1, gt=0)
    """Micro-batches per optimizer step."""
    learning_rate: float = Field(default=2e-4, gt=0)
    """Peak learning rate."""
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule after warm-up."""
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    """Share of max_steps spent warming up."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient clipping norm."""
    max_grad_norm_stop: float | None = Field(default=1e4, gt=0)
    """Fail the run at the first step whose gradient norm before clipping exceeds this (exploding gradients);
    null turns the check off. Healthy fine-tuning runs stay within 0.1-100, so 1e4 only catches runs that have
    blown up (clipping would otherwise hide it until the loss turns NaN)."""
    logging_steps: int = Field(default=5, gt=0)
    """Log training metrics every this many steps."""
    eval_steps: int | None = Field(default=None, gt=0)
    """Evaluate on the validation rows every this many steps (default: only before and after training)."""
    early_stopping: EarlyStoppingConfig | None = None
    """{patience, min_delta, metric}: stop once the validation metric (evaluated every eval_steps) has not improved
    for `patience` evaluations, and end on the best evaluated step's weights: its eval_* metrics, and test_* scored
    on it. Records best_step, stopped_early and the reason (tag oneml.stop_reason). Needs train.eval_steps.
    Default: off (train to max_steps)."""
    eval_before: bool = True
    """Evaluate once before training, so the improvement is on record."""
    eval_batch_size: int | None = Field(default=None, gt=0)
    """Examples per evaluation batch (default: batch_size)."""
    seed: int = 0
    """Seed for initialisation, dropout and data order."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when present, else CPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    lean_activations: bool = True
    """Store LoRA's dropout and the gated MLP's activation as recipes for the backward pass instead of whole tensors
    (a one-byte mask, rebuilt from tensors kept anyway): bitwise the same losses and gradients, less memory per
    token. Off where gradient checkpointing or torch.compile is on (recorded with the reason)."""
    return_memory: bool = False
    """CPU (glibc): give the memory a step frees back to the system instead of keeping it in malloc's heap (a fixed
    mmap threshold, process-wide): the peak follows the live tensors (1.2 GiB lower on the demo config), for page
    faults on fresh mappings (measured ~45% more CPU time per step there, BENCHMARKS.md); no value changes."""
    loss_threshold: float | None = Field(default=None, gt=0)
    """Record the first step whose training loss is at or below this (fast-convergence metric)."""
    diagnostics_every: int = Field(default=10, gt=0)
    """Interval in steps for per-layer diagnostics (condition numbers, DoRA magnitudes, AdaLoRA ranks)."""
    save_steps: int | None = Field(default=None, gt=0)
    """Save a resumable checkpoint (weights, optimizer, scheduler, RNG) every this many steps into
    <root>/runs/.<run id>.ckpt/; a rerun of the same run resumes from it. Off by default; studies set it."""
    save_adapter: bool = True
    """Save the trained adapter (or full model) under the run directory and as an MLflow artifact."""
    chunked_loss: bool | Literal["ours", "trl", "liger", "cce"] = True
    """The LM head + loss, never the full (tokens x vocabulary) logits: auto (= true; ours on every device, the
    measured choice on CPU), ours (labelled tokens in tiles, exact), liger or cce (Liger's fused linear
    cross-entropy, cut cross-entropy: CUDA and their packages, oneml[gpu]), trl (TRL's fused head, SFT/DPO), or
    off (= false: the trainer's own head, TRL's fused head for SFT/DPO, full logits for ORPO)."""
    compile: bool | Literal["regional"] = False
    """torch.compile: true (or full) compiles the whole model (transformers' torch_compile); regional compiles each
    decoder layer once, with dynamic sequence lengths (far shorter compilation, no recompile per batch shape).
    The first steps pay for it: compile_seconds records that, steady_tokens_per_second the rate after it."""
    kernels: Literal["none", "liger"] = "none"
    """Fused kernels swapped into the model: liger = Liger's RMSNorm, SwiGLU and RoPE (CUDA, liger-kernel; its fused
    cross-entropy is train.chunked_loss: liger)."""
    optim: Literal["auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "adafactor"] = "auto"
    """Optimizer: auto (what runs used before this key: transformers' default, adamw_torch_fused on torch >= 2.8,
    CPU included), adamw_torch, adamw_torch_fused, adamw_8bit / paged_adamw_8bit (bitsandbytes; paged needs CUDA),
    adafactor."""
    tf32: bool = False
    """Let fp32 matmuls use TF32 tensor cores (CUDA, Ampere or newer): faster, ~1e-3 relative error per matmul.
    Off by default: it changes fp32 results."""

    @field_validator("chunked_loss", mode="before")
    @classmethod
    def _head(cls, value: Any) -> Any:
        from oneml.models.head_backends import CHOICES

        named = {"auto": True, "off": False}
        if isinstance(value, str) and value.lower() in named:
            return named[value.lower()]
        if isinstance(value, bool) or value in CHOICES:
            return value
        raise OnemlError(
            f"train.chunked_loss: must be one of {', '.join(CHOICES)} (or true = auto, false = off), got {value!r}"
        )

    @field_validator("compile", mode="before")
    @classmethod
    def _compile(cls, value: Any) -> Any:
        named = {"full": True, "off": False, "none": False}
        if isinstance(value, str) and value.lower() in named:
            return named[value.lower()]
        if isinstance(value, bool) or value == "regional":
            return value
        raise OnemlError(f"train.compile: must be false, true (= full) or regional, got {value!r}")


class DistributedConfig(Section):
    launcher: Literal["none", "accelerate", "torchrun"] = "none"
    """Spread one run over processes: none (this process), accelerate (`accelerate launch`) or torchrun.
    `oneml train` relaunches itself through it; only rank 0 records to MLflow and publishes the run."""
    nproc: int = Field(default=1, gt=0)
    """Processes per node (one per GPU; on CPU each takes a share of the cores)."""
    nnodes: int = Field(default=1, gt=0)
    """Nodes; run the same `oneml train` command on each with its own node_rank."""
    node_rank: int = Field(default=0, ge=0)
    """This node's rank (0 on the node that hosts the rendezvous)."""
    master_addr: str = "127.0.0.1"
    """Address of node 0 (the rendezvous)."""
    master_port: int = Field(default=29500, gt=0, lt=65536)
    """Rendezvous port on node 0."""
    strategy: Literal[tuple(STRATEGIES.names())] = "ddp"  # type: ignore[valid-type]
    """ddp, fsdp (FSDP2), zero2 or zero3 (DeepSpeed, generated from this config; needs deepspeed and CUDA)."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """Collective backend: auto = nccl on CUDA, gloo on CPU."""

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @model_validator(mode="after")
    def _topology(self) -> DistributedConfig:
        if self.launcher == "none" and self.world_size > 1:
            raise ValueError("nproc/nnodes above 1 need a launcher (accelerate or torchrun)")
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank must be below nnodes ({self.nnodes}), got {self.node_rank}")
        return self


class TrackingConfig(Section):
    root: str = "oneml-runs"
    """Directory for run outputs and the default SQLite MLflow store."""
    uri: str | None = None
    """MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<root>/mlflow.db)."""
    experiment: str = "oneml"
    """MLflow experiment name."""
    artifact_location: str | None = None
    """Where the experiment stores artifacts (adapters, configs), set when it is created: s3://bucket/prefix for
    S3 or MinIO (endpoint and keys from MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; needs
    boto3), or a file:// URI. Default: <root>/artifacts for a local store, the server's choice otherwise."""
    run_name: str | None = None
    """MLflow run name (default: <method>-<model>-<run id>)."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Extra MLflow tags for the run (studies set oneml.study, oneml.track, ...)."""


class RunConfig(Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The base model."""
    method: MethodConfig = Field(default_factory=lambda: METHODS.get("lora")())
    """The fine-tuning method; `oneml methods` lists them."""
    objective: ObjectiveConfig = Field(default_factory=lambda: OBJECTIVES.get("sft")())
    """The training objective."""
    data: DataConfig = Field(default_factory=DataConfig)
    """The dataset and how it is tokenized."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """Optimisation budget and settings."""
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    """Where results are recorded."""
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    """One run over several processes, GPUs or nodes (launcher, processes, strategy)."""

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: Any) -> Any:
        return _dispatch(METHODS, value, "method")

    @model_validator(mode="after")
    def _early_stopping(self) -> RunConfig:
        stopping = self.train.early_stopping
        if stopping is None:
            return self
        if self.train.eval_steps is None:
            raise OnemlError(
                "train.early_stopping: needs train.eval_steps (how often to evaluate on the validation rows), "
                "e.g. --set train.eval_steps=10"
            )
        recorded = type(self.objective).eval_metrics
        if stopping.metric not in recorded:
            raise OnemlError(
                f"train.early_stopping.metric: {stopping.metric!r} is not a validation metric of objective "
                f"{self.objective.name}; one of {', '.join(recorded)}"
            )
        if self.distributed.world_size > 1:
            raise OnemlError(
                f"train.early_stopping: not supported over several processes yet (world size "
                f"{self.distributed.world_size}); run it in one process or drop early stopping"
            )
        return self

    @field_validator("objective", mode="before")
    @classmethod
    def _objective(cls, value: Any) -> Any:
        return _dispatch(OBJECTIVES, value, "objective")

    @field_validator("objective")
    @classmethod
    def _for_method(cls, objective: ObjectiveConfig, info: ValidationInfo) -> ObjectiveConfig:
        """Defaults that depend on the method (DPO's reference: auto) resolved: the config records what ran."""
        method = info.data.get("method")  # validated before the objective (field order)
        return objective.for_method(method) if method is not None else objective

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", serialize_as_any=True)

    @property
    def config_id(self) -> str:
        """hash(resolved config without the seed): the runs of one configuration across seeds share it."""
        payload = self._identity()
        payload["train"] = {k: v for k, v in payload["train"].items() if k != "seed"}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def run_id(self) -> str:
        """hash(resolved config, seed): the same experiment always gets the same id.

        Tracking settings are left out: where a result is recorded does not change the result.
        """
        blob = json.dumps(self._identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def _identity(self) -> dict[str, Any]:
        """What determines the result: not where it is recorded, nor how processes find each other; a run over
        several processes is a different experiment (another effective batch), one process keeps its old id."""
        payload = {k: v for k, v in self.to_dict().items() if k not in ("tracking", "distributed")}
        for section, keys in _ADDED_LATER.items():
            payload[section] = {k: v for k, v in payload[section].items() if not (k in keys and v is None)}
        for section, defaults in _LEFT_OUT_AT_DEFAULT.items():
            payload[section] = {k: v for k, v in payload[section].items() if not (k in defaults and v == defaults[k])}
        for section in ("method", "objective"):  # each method's and objective's own keys added later, at their default
            schema = type(getattr(self, section))
            for key in schema.identity_defaults:
                if key in payload[section] and payload[section][key] == _json_default(schema.model_fields[key]):
                    del payload[section][key]
        d = self.distributed
        if d.world_size > 1:
            payload["distributed"] = {"world_size": d.world_size, "strategy": d.strategy}
        return payload


_ADDED_LATER = {
    "data": ("test_size", "test_fraction", "datasets", "max_completion_length"),
    "train": ("early_stopping",),
}
"""Keys added after runs had been recorded: left out of the identity while unset (None), so that every config
written before them keeps its run id and a study resumes its finished runs instead of training them again."""


def _json_default(field: Any) -> Any:
    """A field's default as ``to_dict`` writes it (JSON mode), to compare with a dumped value."""
    from pydantic import TypeAdapter

    return TypeAdapter(field.annotation).dump_python(field.get_default(call_default_factory=True), mode="json")


_LEFT_OUT_AT_DEFAULT = {
    "model": {"attn_implementation": "auto"},
    "train": {"kernels": "none", "optim": "auto", "tf32": False, "lean_activations": True, "return_memory": False},
}
"""Speed and memory keys added after runs had been recorded, left out of the identity while at these defaults (which
compute what every run did before them; lean_activations bitwise), so that earlier run ids stay valid; any other
value is part of the identity."""


def _dispatch(registry: Any, value: Any, field: str) -> Any:
    """Pick the config class named by ``value['name']`` (a dict from YAML) and validate with it."""
    if isinstance(value, Section):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise OnemlError(f"{field}: must be a mapping with a 'name', got {value!r}")
    name = value.get("name", RunConfig.model_fields[field].get_default(call_default_factory=True).name)
    if not isinstance(name, str):  # a list or mapping would not even be hashable for the registry lookup
        raise OnemlError(f"{field}.name: must be a name, got {name!r}")
    if name not in registry:
        try:
            registry.get(str(name))
        except OnemlError as err:
            raise OnemlError(f"{field}.name: {err}") from None
    schema = registry.get(name)
    return validate(schema, {**value, "name": name}, prefix=field)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise OnemlError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise OnemlError(f"{path}:{where}: malformed YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OnemlError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (``8``, ``true``, ``[q_proj]``)."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise OnemlError(f"--set {item!r}: expected key=value, e.g. method.r=8")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if isinstance(child, str) and part in ("method", "objective"):
                child = node[part] = {"name": child}
            if not isinstance(child, dict):
                raise OnemlError(f"--set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def resolve(data: dict[str, Any]) -> RunConfig:
    return validate(RunConfig, data)


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or start from the defaults), apply overrides, validate."""
    data = load_yaml(path) if path is not None else {}
    return resolve(apply_overrides(data, overrides or []))


def describe_keys() -> list[tuple[str, str, str, str]]:
    """Every key of a run config with its type, default and meaning (`oneml keys`), each method's and objective's
    own keys under ``method[<name>].`` / ``objective[<name>].``."""
    from oneml.methods import METHODS
    from oneml.objectives import OBJECTIVES
    from oneml.schema import describe_keys as describe

    return describe(RunConfig, kinds={"method": METHODS, "objective": OBJECTIVES})
