"""Executors: where a study's trials run. Each takes jobs and reports every outcome as it arrives.

Every trial is a deterministic function of its config, so the executor changes only the wall time.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from oneml.distributed import devices
from oneml.errors import Interrupted, OnemlError
from oneml.registry import Registry
from oneml.study.trial import GPU_FRACTION_ENV, Job, Outcome, run_trial
from oneml.tracking import tags as tag


@dataclass
class ExecutorOptions:
    workers: int = 1
    gpu_fraction: float | None = None
    ray_address: str | None = None
    cpus: float = 1.0
    """ray: CPUs each trial reserves."""
    resources: dict[str, float] = field(default_factory=dict)
    """ray: custom resources each trial reserves."""

    @classmethod
    def of(cls, settings, **given) -> ExecutorOptions:
        """The study's executor settings, overridden by what the command line gave (None: not given)."""
        values = dict(
            workers=settings.workers, gpu_fraction=settings.gpu_fraction, ray_address=settings.ray_address,
            cpus=settings.cpus_per_trial, resources=dict(settings.resources),
        )  # fmt: skip
        return cls(**values | {k: v for k, v in given.items() if v is not None})


Started = Callable[[Job], None]
Done = Callable[[Job, dict[str, Any]], None]


class Executor(Protocol):
    def __call__(self, jobs: list[Job], options: ExecutorOptions, started: Started, done: Done) -> None: ...


EXECUTORS: Registry[Executor] = Registry("executor")


def run_local(jobs: list[Job], options: ExecutorOptions, started: Started, done: Done) -> None:
    """One trial after another in this process, or --workers N trials at once in worker processes.

    Each worker process holds a slot, taken when its trial starts and given back when it ends; the slot picks its
    GPU (`devices.trial_placement`), so a trial runs where no other trial holds that share of a GPU."""
    if options.workers <= 1 and options.gpu_fraction is None:
        for job in jobs:
            started(job)
            done(job, run_trial(job.config, job.stop_at))
        return
    placement = local_placement([job.config for job in jobs], options)
    free: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(options.workers):
        free.put(slot)
    workers = _Workers()
    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        futures = {pool.submit(_in_slot, job, options, placement, free, started, workers): job for job in jobs}
        try:
            for future in as_completed(futures):
                done(futures[future], future.result())
        except BaseException:  # SIGTERM (Interrupted) or Ctrl-C reached the driver: no trial may outlive it
            for future in futures:
                future.cancel()
            workers.stop()
            raise


def local_placement(configs: list[dict[str, Any]], options: ExecutorOptions) -> devices.TrialPlacement:
    """Each worker slot's GPU; more workers than the visible GPUs hold, or a share too small for a CUDA context,
    is refused in one line (a study checks this before it records anything)."""
    uses_gpu = any(config.get("train", {}).get("device", "auto") != "cpu" for config in configs)
    placement = devices.trial_placement(options.workers, options.gpu_fraction, devices.visible_gpus(), uses_gpu)
    if options.gpu_fraction is not None and any(gpu is not None for gpu in placement.devices):
        devices.allocator_fraction(options.gpu_fraction, devices.gpu_memory_bytes())
    return placement


def preflight(executor: str, configs: list[dict[str, Any]], options: ExecutorOptions) -> None:
    """What an executor can refuse before a study records anything (the local one: its GPU placement)."""
    check = PREFLIGHT.get(executor)
    if check is not None and (options.workers > 1 or options.gpu_fraction is not None):
        check(configs, options)


class _Workers:
    """The trial processes in flight. `stop` sends each SIGTERM (its run is recorded KILLED and keeps its
    checkpoints, so the study resumes), waits for them, and lets no new one start."""

    GRACE_SECONDS = 120

    def __init__(self) -> None:
        self.lock, self.stopping, self.live = threading.Lock(), False, set()

    def start(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen | None:
        with self.lock:
            if self.stopping:
                return None
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.live.add(proc)
            return proc

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            procs = [p for p in self.live if p.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=self.GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()


def _worker_env(options: ExecutorOptions, gpu: str | None) -> dict[str, str]:
    env = dict(os.environ)
    # Trials share the cores: without a cap every process starts one thread per core and they thrash.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // options.workers)))
    if gpu is not None:
        env[devices.VISIBLE_ENV] = gpu
    if options.gpu_fraction is not None:
        env[GPU_FRACTION_ENV] = str(options.gpu_fraction)
    # Concurrent trials share the machine: their tokens/s are not a solo run's, and the analysis must know.
    env[devices.CONCURRENT_ENV] = str(options.workers)
    return env


def _in_slot(job: Job, options: ExecutorOptions, placement, free, started: Started, workers) -> dict[str, Any]:
    """Run one trial in a fresh worker process (the hidden `oneml study _trial` command), holding a free slot."""
    slot = free.get()  # the pool runs at most `workers` of these at once, so a slot is always free here
    try:
        return _in_process(job, _worker_env(options, placement.devices[slot]), started, workers)
    finally:
        free.put(slot)


def _in_process(job: Job, env: dict[str, str], started: Started, workers: _Workers) -> dict[str, Any]:
    started(job)
    with tempfile.TemporaryDirectory(prefix="oneml-trial-") as tmp:
        spec, result = Path(tmp) / "job.json", Path(tmp) / "outcome.json"
        spec.write_text(json.dumps({"config": job.config, "stop_at": job.stop_at}))
        cmd = [sys.executable, "-m", "oneml", "study", "_trial", str(spec), str(result)]
        proc = workers.start(cmd, env)
        if proc is None:
            return Outcome(_run_id(job), "failed", reason="not started: the study was interrupted").to_dict()
        _, stderr = proc.communicate()
        if result.is_file():
            return json.loads(result.read_text())
    # The process died before writing its outcome (killed, out of memory, a crash in native code).
    tail = (stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1][:500]
    run_id = _run_id(job)
    return Outcome(run_id, "failed", reason=f"worker process exited with code {proc.returncode}: {tail}").to_dict()


def _run_id(job: Job) -> str:
    from oneml.config import resolve

    return resolve(job.config).run_id


def run_ray(jobs: list[Job], options: ExecutorOptions, started: Started, done: Done) -> None:
    """Each trial a Ray task; a local Ray instance unless --ray-address names an existing cluster."""
    try:
        import ray
    except ImportError:
        raise OnemlError("executor: ray is not installed; pip install 'oneml[cluster]'") from None
    if not ray.is_initialized():
        ray.init(address=options.ray_address, include_dashboard=False, log_to_driver=False)
    # Ray places each trial where its reservation fits: CPUs, a GPU share (several trials per GPU below 1),
    # custom resources (pin trials to nodes started with `ray start --resources`).
    reserve = dict(num_cpus=options.cpus, num_gpus=options.gpu_fraction or 0, resources=options.resources or None)
    task = ray.remote(**reserve)(_ray_trial)
    pending = {}
    for job in jobs:
        started(job)
        pending[task.remote(job.config, job.stop_at, options.gpu_fraction)] = job
    # SIGTERM is noted and acted on between waits: ray.init's own handler would abort the driver (the study left
    # RUNNING), and an exception raised inside ray.wait's native code comes out as a SystemError.
    terms: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terms.append(signum)) if main else None
    try:
        while pending:
            if terms:
                raise Interrupted(terms[0])
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            if not ready:
                continue
            job = pending.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except Exception as err:  # the worker died (OOM kill, node lost): that trial failed, not the study
                reason = f"ray task failed: {str(err).splitlines()[0]}"
                outcome = Outcome(_run_id(job), "failed", reason=reason).to_dict()
            done(job, outcome)
    except BaseException:  # the driver was interrupted: Ray interrupts each running trial (recorded KILLED)
        for ref in pending:
            ray.cancel(ref)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=_Workers.GRACE_SECONDS)
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _ray_trial(config: dict[str, Any], stop_at: int | None, gpu_fraction: float | None) -> dict[str, Any]:
    import ray

    if gpu_fraction is not None:
        os.environ[GPU_FRACTION_ENV] = str(gpu_fraction)
    # Ray packs trials onto nodes and GPUs by their reservations: how many ran beside this one is not known here,
    # only that it was not necessarily alone.
    os.environ[devices.CONCURRENT_ENV] = "ray"
    # Which node ran the trial, on its MLflow record (tracking tags do not change the run id).
    node = {tag.RAY_NODE: ray.get_runtime_context().get_node_id(), tag.RAY_HOST: ray.util.get_node_ip_address()}
    tracking = config.get("tracking", {})
    config = config | {"tracking": tracking | {"tags": tracking.get("tags", {}) | node}}
    return run_trial(config, stop_at)


PREFLIGHT: dict[str, Callable[[list[dict[str, Any]], ExecutorOptions], Any]] = {"local": local_placement}
"""Executor name -> its check before a study starts (Ray places trials by their reservations itself)."""

EXECUTORS.register("local", run_local, "this machine: sequential, or --workers N processes")
EXECUTORS.register("ray", run_ray, "a Ray task per trial, on a local or existing (--ray-address) cluster")
