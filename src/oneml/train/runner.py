"""The one place a run is assembled and executed.

Order matters for honesty: everything that can be wrong with the user's input (config, model,
data, targets) is checked before the MLflow run exists, so a bad input never leaves a run behind;
once the run exists it ends FINISHED only after the adapter and results are written, and FAILED
(with the reason) on any error.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from oneml.config import RunConfig
from oneml.distributed import devices, strategies
from oneml.distributed import world as worlds
from oneml.errors import Interrupted, OnemlError
from oneml.tracking import layout
from oneml.tracking import tags as tag
from oneml.train import speedups
from oneml.train.arguments import precision_recipe, switches, trainer_args
from oneml.train.calibration import calibration_batches
from oneml.train.callbacks import compile_metrics, live_metrics, progress_bar
from oneml.train.checkpoints import (
    StopAt,
    checkpoint_dir,
    clear_leftovers,
    last_checkpoint,
    read_json,
    rung_file,
    write_json,
)
from oneml.train.context import RunContext, Setup, Sink
from oneml.train.faults import fault
from oneml.train.guard import RunGuard, check_disk, explain, guarded, release_memory


@dataclass
class RunResult:
    run_id: str
    mlflow_run_id: str
    run_dir: Path
    tracking_uri: str
    metrics: dict[str, float]
    data_stats: dict[str, Any] = field(default_factory=dict)
    config: RunConfig | None = None
    model: Any = field(default=None, repr=False)
    """The trained model (a peft model for adapter methods), ready for generation."""
    tokenizer: Any = field(default=None, repr=False)
    complete: bool = True
    """False when the run stopped early at ``stop_at``: it is checkpointed, not published, and continues later."""
    steps_trained: int = 0
    """Optimizer steps taken by this call (less than ``steps`` when it resumed from a checkpoint)."""


def resolve_device(choice: str) -> str:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise OnemlError("train.device: cuda requested but no CUDA device is available")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def _prepare_root(root: str) -> Path:
    path = Path(root).resolve()
    try:
        layout.runs_dir(path).mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise OnemlError(f"tracking.root: cannot write to {path}: {err.strerror or err}") from None
    return path


def _run_name(config: RunConfig) -> str:
    model = Path(config.model.name).name if "/" in config.model.name else config.model.name
    return config.tracking.run_name or f"{config.method.name}-{model}-{config.run_id}"


def quiet_libraries() -> None:
    """Our progress display replaces the libraries' own bars and notices, which would interleave with it."""
    import logging
    import warnings

    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    # bitsandbytes warns at import on CPU that an optional kernels package is missing; it falls back fine.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*will be removed in v6.*", category=FutureWarning)


@guarded  # SIGTERM ends the run like Ctrl-C; out of memory while loading becomes one actionable line
def train(
    config: RunConfig,
    *,
    progress: bool = True,
    console=None,
    callbacks: list[Any] | None = None,
    stop_at: int | None = None,
) -> RunResult:
    """Fine-tune ``config.model`` with ``config.method`` and record everything in MLflow.

    ``callbacks``: extra transformers ``TrainerCallback`` objects (your own logging, early stopping...).
    ``stop_at``: pause at this step (needs ``train.save_steps``): evaluate, checkpoint, and return an
    incomplete result; calling again with the same config continues the same run from there.
    """
    from rich.console import Console

    quiet_libraries()
    from oneml.tracking import RunRecorder, resolve_tracking_uri
    from oneml.tracking.store import check_server

    console = console or Console(stderr=True)
    world = worlds.joined(config)
    progress = progress and world.is_main
    devices.pin_one_process(world.size, worlds.launched(), config.train.device)  # before CUDA starts
    device = resolve_device(config.train.device)
    devices.check_one_device(world.size, worlds.launched(), device)
    strategies.check(config, device)
    speedups.check(config, device)
    strategies.prepare(config, device)
    if world.is_main:  # a tracking server that does not answer fails now, not after the model has loaded
        check_server(resolve_tracking_uri(config.tracking.uri, config.tracking.root), "tracking.uri")
    root = _prepare_root(config.tracking.root)
    setup = _setup(config, device, console)  # user errors surface here, before the store is touched
    uri = resolve_tracking_uri(config.tracking.uri, root)
    if stop_at is not None and not config.train.save_steps:
        raise OnemlError("stop_at: needs train.save_steps, or the paused run could not continue")
    check_disk(config, root, setup.sizes, uri)
    # One run, one record: only rank 0 writes to MLflow and publishes the run directory.
    tracking = config.tracking
    recorder = RunRecorder(uri, root, tracking.experiment, tracking.artifact_location) if world.is_main else None
    recorder = recorder or worlds.SilentRecorder()
    run_dir = layout.run_dir(root, config.run_id)
    staging = layout.staging_dir(run_dir)
    clear_leftovers(run_dir)
    ckpt = checkpoint_dir(root, config.run_id) if config.train.save_steps else None
    if world.is_main:
        _start_or_continue(recorder, ckpt, _run_name(config), _tags(config, setup, device))
    guard = RunGuard()
    extra = list(callbacks or []) + ([StopAt(stop_at)] if stop_at is not None else []) + [guard]
    extra += live_metrics(config) if world.is_main else []
    # Only a call that can reach max_steps prepares the test evaluation: a paused one (a halving rung) never
    # touches the test rows, not even to score DPO's reference on them.
    final = stop_at is None or stop_at >= config.train.max_steps
    run = RunContext(config, setup, device, recorder, uri, run_dir, staging, ckpt, console, progress, extra, final)
    try:
        return _execute(run)
    except BaseException as err:  # KeyboardInterrupt too: the run must not stay RUNNING
        shutil.rmtree(staging, ignore_errors=True)
        failure = explain(err, config, guard.step, root)  # out of memory, disk full: one actionable line
        _record_failure(recorder, config, err, failure, guard.step)
        if failure is None:
            raise
    del setup  # raised outside the handler, so that the failed step's tensors are freed before the caller goes on
    release_memory()
    raise failure


def _record_failure(recorder, config: RunConfig, err: BaseException, failure, step: int) -> None:
    """FAILED with the reason; KILLED for Ctrl-C or SIGTERM, whose run resumes from its checkpoint when rerun."""
    text = str(failure or err)
    reason = text.splitlines()[0][:500] if text else type(err).__name__
    status = "FAILED"
    if isinstance(err, (KeyboardInterrupt, Interrupted)):
        status = "KILLED"
        reason = f"{text or 'interrupted'} at step {step}" + ("; rerun to resume" if config.train.save_steps else "")
    try:
        recorder.fail(f"{type(err).__name__}: {reason}", status=status)
    except Exception as store:  # a full disk can take the store down too; the error itself must still surface
        if failure is not None:
            failure.args = (f"{failure} (the MLflow record could not be updated: {type(store).__name__})",)


def _start_or_continue(recorder, ckpt: Path | None, name: str, tags: dict[str, str]) -> None:
    """A resumed run continues its own MLflow run, so that one run id has one record."""
    known = read_json(ckpt / "mlflow.json") if ckpt is not None else None
    if known:
        try:
            recorder.client.get_run(known["run_id"])
        except Exception:  # the store was reset or moved: record afresh
            known = None
    if known:
        recorder.run_id = known["run_id"]
        recorder.client.update_run(recorder.run_id, status="RUNNING")
        if tag.FAILURE in recorder.client.get_run(recorder.run_id).data.tags:
            recorder.client.delete_tag(recorder.run_id, tag.FAILURE)
        recorder.set_tags(tags)
        return
    recorder.close_orphans(tags[tag.RUN_ID])
    recorder.start(name, tags=tags)
    if ckpt is not None:
        write_json(ckpt / "mlflow.json", {"run_id": recorder.run_id})


def _setup(config: RunConfig, device: str, console) -> Setup:
    """Load, prepare and check everything; any user error surfaces here, before a run is recorded."""
    from transformers import set_seed

    from oneml.data.sources import check_sources
    from oneml.methods import MethodContext
    from oneml.models import describe_model, lean, load_model_and_tokenizer
    from oneml.train import memory
    from oneml.train.start import start_from

    sink = Sink()
    memory_kept = memory.apply(config, device)  # before loading, whose temporaries are freed memory too
    t = config.train
    ctx = MethodContext(
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        seed=t.seed,
        device=device,
        gradient_checkpointing=t.gradient_checkpointing,
        diagnostics_every=t.diagnostics_every,
        sharded=strategies.shards_parameters(config),
        master_dtype="float32" if config.model.dtype == "auto" else None,
        log_metrics=sink.log_metrics,
        log_json=sink.log_json,
    )
    config.method.check(ctx)
    refusal = config.method.objective_refusal(config.objective.name)
    if refusal:
        raise OnemlError(f"objective.name: {config.objective.name} cannot train method {config.method.name}: {refusal}")
    config.objective.check(config.method)
    check_sources(config.data)
    config.objective.check_run(config)
    set_seed(config.train.seed)
    with console.status(f"loading {config.model.name}"):
        model, tokenizer = load_model_and_tokenizer(config.model, device=device, seed=config.train.seed)
    with console.status(f"preparing {config.data.dataset}"):
        data = config.objective.prepare(config.data, tokenizer)
        fault("prepare")
    if config.model.adapter:
        with console.status(f"merging the starting point {config.model.adapter}"):
            root = Path(config.tracking.root).resolve()
            model = start_from(model, config.model.adapter, root, config.model.name, type(config.objective).head)
    model = config.objective.with_head(model)
    from oneml.models import attention

    attention.apply(model, config.model.attn_implementation, device)  # before DPO's reference copies the model
    speedups.apply_kernels(model, config.train.kernels)
    reference = config.objective.reference_model(model, config.method)
    if reference is not None:
        reference = config.method.frozen_base(reference)
    dtype = next(model.parameters()).dtype
    if config.train.gradient_checkpointing:
        model.enable_input_require_grads()  # a frozen embedding would otherwise cut the graph under checkpointing
    set_seed(config.train.seed)  # the adapter's random init must not depend on what loading consumed
    ctx = replace(ctx, calibration=partial(calibration_batches, data.train, tokenizer, config, device))
    with console.status(f"applying {config.method.name}"):  # a data-driven init runs forward passes here
        model = config.method.apply(model, ctx)
    speed = config.objective.speed(model, config)
    if config.train.compile == "regional":
        speedups.compile_regions(model)
    lean_off = lean.apply(model, config)
    sizes = describe_model(model)
    return Setup(model, tokenizer, data, dtype, sizes, ctx, sink, reference, speed, lean_off, memory_kept)


def _tags(config: RunConfig, setup: Setup, device: str) -> dict[str, str]:
    from oneml.models import lean
    from oneml.tracking.system import hardware, package_versions, process_tags
    from oneml.train import memory

    tags = {tag.RUN_ID: config.run_id, tag.CONFIG_ID: config.config_id}
    tags |= {tag.METHOD: config.method.name, tag.MODEL: config.model.name}
    rank, why = type(config.method).complexity  # the guide's simplicity rank travels with the run
    tags |= {tag.COMPLEXITY: f"{rank:g}", tag.COMPLEXITY_WHY: why}
    tags |= {tag.OBJECTIVE: config.objective.name, tag.DATASET: config.data.dataset}
    tags |= {tag.SEED: str(config.train.seed), tag.DEVICE: device} | devices.sharing_tags()
    tags |= {tag.TEST_SPLIT: "true" if setup.data.test is not None else "false"}
    d = config.distributed
    tags |= {tag.WORLD_SIZE: str(d.world_size), tag.LAUNCHER: d.launcher, tag.STRATEGY: d.strategy}
    tags |= {f"version.{k}": v for k, v in package_versions().items()}
    tags |= {f"hardware.{k}": v for k, v in hardware().items()} | process_tags()
    optimizer = speedups.optimizer_in_use(config.train.optim, config.method, setup.model, config.train.learning_rate)
    tags |= switches(config, setup.dtype, setup.speed, optimizer) | lean.tags(setup.lean_off)
    return tags | memory.tags(setup.memory_kept) | dict(config.tracking.tags)


def _execute(run: RunContext) -> RunResult:
    from transformers import PrinterCallback

    from oneml.tracking.store import flatten
    from oneml.train.callbacks import PeakMemory, PeriodicEval, RichProgress
    from oneml.train.early_stopping import end_on_best, last_eval

    config, setup, recorder, staging, ckpt, console = (
        run.config, run.setup, run.recorder, run.staging, run.ckpt, run.console,
    )  # fmt: skip
    recorder.log_params(flatten(config.to_dict()) | {f"data.stats.{k}": str(v) for k, v in setup.data.stats.items()})
    recorder.log_metrics(setup.sizes | worlds.batch_sizes(config), step=0)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    setup.sink.attach(recorder, staging / "diagnostics")
    trainer, timer, evaluator, stopper = _build_trainer(run)
    recorder.set_tags(worlds.engine_tags(config, trainer) | {tag.PRECISION: precision_recipe(trainer)})

    def run_eval(step: int) -> dict[str, float]:
        metrics = evaluator("eval")
        recorder.log_metrics(metrics, step=step)
        # Callbacks hear of it as of the Trainer's own evaluations (a caller's logging, the live metrics).
        trainer.control = trainer.callback_handler.on_evaluate(trainer.args, trainer.state, trainer.control, metrics)
        return metrics

    trainer.add_callback(PeriodicEval(config.train.eval_steps, run_eval, stopper))
    # With tqdm off the Trainer prints raw log dicts to stdout; our progress bar and MLflow replace them.
    trainer.remove_callback(PrinterCallback)
    resume = last_checkpoint(ckpt) if ckpt is not None else None
    start_step = int(resume.name.split("-")[-1]) if resume else 0
    if stopper is not None and resume is not None:
        stopper.load(resume)
    if resume is not None:
        for load in _checkpointed(trainer.callback_handler.callbacks, "checkpoint_load"):
            load(resume)
    metrics: dict[str, float] = {}
    # A tuning run is a selection: it has no business with the test rows, not even to record a score no one reads.
    tuning = config.tracking.tags.get(tag.TUNING, "").lower() == "true"
    tests = setup.data.test is not None and not tuning
    tester = _TestEvaluation(config, setup, trainer) if tests and run.final else None
    with console.status("scoring the reference"):
        evaluator.prepare()
        if tester is not None:  # the reference is the starting model, so it is scored before any step
            tester.evaluator.prepare()
        config.objective.reference_scored(trainer)
        if getattr(trainer, "ref_model", None) is None:
            setup.reference = None  # a reference needed only to be scored is freed before training
    with progress_bar(run.progress, console) as bar:
        if config.train.eval_before:
            metrics |= _initial_eval(run_eval, ckpt, resume is not None, console)
            fault("eval")
        if bar is not None:
            trainer.add_callback(RichProgress(bar, f"{config.method.name} on {config.model.name}"))
        wall_start = time.perf_counter()
        with PeakMemory() as memory:
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        wall = time.perf_counter() - wall_start
        with console.status("evaluating after training"):
            metrics |= last_eval(run_eval, trainer.state.global_step, stopper)

    steps = trainer.state.global_step
    if steps < config.train.max_steps and not (stopper is not None and stopper.stopped):
        return _pause(run, metrics | (stopper.rung_metrics() if stopper else {}), steps, steps - start_step)
    if stopper is not None:
        metrics |= end_on_best(run, stopper, steps, metrics)
    metrics |= _test_scores(run, trainer, tester, tests)
    metrics |= _costs(run, trainer, timer, wall, memory)
    recorder.log_metrics(metrics, step=steps)
    config.objective.finished(trainer)

    _record_and_publish(run, trainer, metrics)
    return RunResult(
        config.run_id, recorder.run_id, run.run_dir, run.uri, metrics, setup.data.stats, config, trainer.model,
        setup.tokenizer, steps_trained=steps - start_step,
    )  # fmt: skip


def _test_scores(run: RunContext, trainer, tester, wanted: bool) -> dict[str, float]:
    """The test rows scored by the final model; prepared here when a paused call (a halving rung) turned out to be
    the last because early stopping ended the run in it."""
    if tester is None and wanted:
        tester = _TestEvaluation(run.config, run.setup, trainer)
        tester.evaluator.prepare()  # the reference is the starting model: a frozen copy, or the adapter switched off
    if tester is None:
        return {}
    with run.console.status("evaluating on the test rows"):
        return tester()


def _costs(run: RunContext, trainer, timer, wall: float, memory) -> dict[str, float]:
    """Size, memory, time and throughput of a finished run."""
    tokens = float(trainer.state.num_input_tokens_seen or 0)
    metrics = run.setup.sizes | memory.metrics() | worlds.batch_sizes(run.config)
    metrics |= timer.throughput(tokens) | {"train_wall_seconds": wall, "train_tokens": tokens}
    metrics["steps"] = float(trainer.state.global_step)
    return metrics | compile_metrics(trainer)


def _record_and_publish(run: RunContext, trainer, metrics: dict[str, float]) -> None:
    """Outputs first, then the atomic publish, then FINISHED: a run marked finished always has its files."""
    config, recorder, staging, run_dir, ckpt = run.config, run.recorder, run.staging, run.run_dir, run.ckpt
    if not worlds.current().is_main:  # rank 0 publishes; the others only join a collective save
        if config.train.save_adapter:
            worlds.collective_save(config, trainer, staging / "model")
        shutil.rmtree(staging, ignore_errors=True)
        return
    _write_outputs(config, run.setup, trainer, staging, metrics)
    if config.train.save_adapter:
        recorder.log_artifacts(staging / "model", "model")
    if (staging / "diagnostics").is_dir():
        recorder.log_artifacts(staging / "diagnostics", "diagnostics")
    for name in ("config.yaml", "metrics.json", "data_stats.json"):
        recorder.log_artifact(staging / name)
    fault("mlflow")
    layout.publish(staging, run_dir)
    if ckpt is not None:
        shutil.rmtree(ckpt, ignore_errors=True)  # the published run supersedes its checkpoints
    recorder.set_tags({tag.RUN_DIR: str(run_dir)})
    recorder.finish()


def _checkpointed(callbacks: list[Any], hook: str) -> tuple[Any, ...]:
    """The callbacks' ``checkpoint_save(folder)`` / ``checkpoint_load(folder)``: a method's training state that a
    resumed run needs beyond the Trainer's (AdaLoRA's allocator), written into each checkpoint before its rename."""
    return tuple(getattr(cb, hook) for cb in callbacks if callable(getattr(cb, hook, None)))


def _build_trainer(run: RunContext):
    from oneml.objectives import TrainerInputs
    from oneml.train import hooks
    from oneml.train.callbacks import CompileClock, MlflowMetrics, StepTimer
    from oneml.train.early_stopping import EarlyStopping
    from oneml.train.monitors import EarlyLogging, StepsToThreshold, StopOnNonFinite

    config, setup, recorder, ckpt = run.config, run.setup, run.recorder, run.ckpt
    timer = StepTimer()
    callbacks: list[Any] = [MlflowMetrics(recorder), timer, EarlyLogging(), StopOnNonFinite()]
    if config.train.loss_threshold is not None:
        callbacks.append(StepsToThreshold(config.train.loss_threshold, recorder.log_metrics))
    if config.train.compile is not False:
        callbacks.append(CompileClock())  # compile_seconds and the steady rate, apart
    callbacks += config.method.callbacks(setup.model, setup.ctx) + list(run.callbacks)
    t = config.train
    build = speedups.OPTIMIZERS.get(t.optim).build  # the configured kind, over the method's own groups (LoRA+)
    optimizer = config.method.optimizer(setup.model, t.learning_rate, t.weight_decay, build)
    output_dir = ckpt if ckpt is not None else run.staging / "trainer"
    inputs = TrainerInputs(
        model=setup.model,
        tokenizer=setup.tokenizer,
        train_dataset=setup.data.train,
        eval_dataset=setup.data.eval,
        args=trainer_args(config, run.device, setup.dtype, output_dir),
        callbacks=callbacks,
        optimizers=(optimizer, None),
        max_length=config.data.max_length,
        speed=setup.speed,
        ref_model=setup.reference,
    )
    trainer = config.objective.build_trainer(inputs)
    stopper = EarlyStopping(config.train.early_stopping, setup.model) if config.train.early_stopping else None
    hooks.install(
        trainer, max_grad_norm_stop=config.train.max_grad_norm_stop, checkpoints=ckpt is not None,
        extras=((stopper.save,) if stopper is not None else ()) + _checkpointed(callbacks, "checkpoint_save"),
    )  # fmt: skip
    evaluator = config.objective.evaluator(trainer, setup.data, setup.tokenizer, config.data.max_length)
    return trainer, timer, evaluator, stopper


class _TestEvaluation:
    """The final model scored once on the test rows, with the objective's own evaluator: the same metrics as the
    final evaluation, named test_*. No evaluation during training reads these rows (selection reads eval_*);
    only a reference (DPO's starting model, which training does not change) is scored on them beforehand."""

    def __init__(self, config: RunConfig, setup: Setup, trainer):
        from dataclasses import replace

        self.trainer, self.rows = trainer, setup.data.test
        # An evaluator scores the eval rows of the data it is given, or the trainer's eval dataset (SFT's token
        # evaluation): both are pointed at the test rows, the trainer's only for the duration of the call.
        test_view = replace(setup.data, eval=setup.data.test)
        self.evaluator = config.objective.evaluator(trainer, test_view, setup.tokenizer, config.data.max_length)

    def __call__(self) -> dict[str, float]:
        held = self.trainer.eval_dataset
        self.trainer.eval_dataset = self.rows
        try:
            return self.evaluator("test")
        finally:
            self.trainer.eval_dataset = held


def _initial_eval(run_eval, ckpt: Path | None, resuming: bool, console) -> dict[str, float]:
    """The evaluation before training; a run resumed from a checkpoint reuses the recorded one (its model has
    moved since). A run that starts from step 0 evaluates again even when an earlier attempt recorded it: the
    evaluation's data loader draws from the global RNG, so skipping it would shift every dropout mask after it
    and the rerun would end elsewhere than an uninterrupted run (a checkpoint restores the RNG state instead)."""
    saved = read_json(ckpt / "initial_eval.json") if ckpt is not None and resuming else None
    if saved is None:
        with console.status("evaluating before training"):
            saved = {k.replace("eval_", "initial_eval_"): v for k, v in run_eval(0).items()}
        if ckpt is not None:
            write_json(ckpt / "initial_eval.json", saved)
    return saved


def _pause(run: RunContext, metrics: dict[str, float], steps: int, trained: int) -> RunResult:
    """Stopped at ``stop_at``: keep the checkpoint and the rung's metrics; the MLflow run stays open."""
    shutil.rmtree(run.staging, ignore_errors=True)
    metrics = {**metrics, "steps": float(steps)}
    if worlds.current().is_main:
        write_json(rung_file(run.ckpt, steps), metrics)
    return RunResult(
        run.config.run_id, run.recorder.run_id, run.run_dir, run.uri, metrics, run.setup.data.stats, run.config,
        complete=False, steps_trained=trained,
    )  # fmt: skip


def _write_outputs(config, setup: Setup, trainer, staging: Path, metrics: dict[str, float]) -> None:
    shutil.rmtree(staging / "trainer", ignore_errors=True)
    (staging / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (staging / "data_stats.json").write_text(json.dumps(setup.data.stats, indent=2, sort_keys=True))
    if config.train.save_adapter:
        if worlds.collective_save(config, trainer, staging / "model"):
            config.method.save_metadata(trainer.model, staging / "model")
        else:
            config.method.save(trainer.model, staging / "model")
        setup.tokenizer.save_pretrained(staging / "model")
