"""GPU placement computed from CUDA_VISIBLE_DEVICES and the device count, without a GPU: one GPU for a one-process
run, a free worker slot's GPU for each concurrent study trial, memory shares that leave room for the CUDA context."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from oneml.distributed import devices
from oneml.distributed.devices import (
    CONTEXT_RESERVE_BYTES,
    allocator_fraction,
    one_process_pin,
    trial_placement,
    visible,
)
from oneml.errors import OnemlError
from oneml.study import executors
from oneml.study.executors import ExecutorOptions, run_local
from oneml.study.trial import Job

GiB = 2**30


def test_visible_follows_the_parents_list_in_its_order():
    assert visible(None, 3) == ["0", "1", "2"]
    assert visible("3,1", 8) == ["3", "1"]
    assert visible("GPU-5e1c, MIG-7a2b", 8) == ["GPU-5e1c", "MIG-7a2b"]  # UUIDs and MIG ids are kept as given
    assert visible("", 8) == []


@pytest.mark.parametrize(
    "env, count, world, launched, pin",
    [
        (None, 8, 1, False, "0"),  # an 8-GPU node, nothing set: the first GPU
        (None, 1, 1, False, None),  # one GPU: nothing to narrow
        (None, 0, 1, False, None),  # a CPU machine
        ("2,3", 0, 1, False, "2"),  # the parent's choice is honoured: its first GPU
        ("GPU-aa,GPU-bb", 0, 1, False, "GPU-aa"),
        ("5", 0, 1, False, None),
        ("", 0, 1, False, None),
        (None, 8, 4, False, None),  # a run over several processes binds a device per rank
        ("0,1", 0, 1, True, None),  # inside a launcher's process
    ],
)
def test_one_process_run_is_pinned_to_its_first_visible_gpu(env, count, world, launched, pin):
    assert one_process_pin(env, count, world, launched) == pin


def test_pin_sets_the_variable_before_cuda_starts(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    devices.pin_one_process(1, False, "cpu")  # a CPU run leaves the GPUs alone
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    devices.pin_one_process(1, False, "auto")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")
    devices.pin_one_process(1, False, "cuda")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6"


def test_a_run_that_still_sees_several_gpus_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with pytest.raises(OnemlError) as info:
        devices.check_one_device(1, False, "cuda")
    assert "4 GPUs are visible" in str(info.value) and "CUDA_VISIBLE_DEVICES" in str(info.value)
    assert len(str(info.value).splitlines()) == 1
    devices.check_one_device(4, False, "cuda")  # several processes: each rank has its own
    devices.check_one_device(1, True, "cuda")  # launched: the launcher's rank binds one
    devices.check_one_device(1, False, "cpu")


@pytest.mark.parametrize(
    "workers, fraction, gpus, placed",
    [
        (2, 0.5, ["0", "1"], ("0", "1")),  # two GPUs: one trial on each, not both on GPU 0
        (2, 0.5, ["0"], ("0", "0")),
        (4, 0.5, ["0", "1"], ("0", "1", "0", "1")),
        (2, None, ["4", "6"], ("4", "6")),  # a whole GPU each, from the parent's list
        (3, 0.3, ["0"], ("0", "0", "0")),
        (2, 0.5, [], (None, None)),  # no GPU visible: trials stay on the CPU
    ],
)
def test_trials_are_spread_over_the_visible_gpus(workers, fraction, gpus, placed):
    assert trial_placement(workers, fraction, gpus, uses_gpu=True).devices == placed


def test_cpu_trials_are_not_placed_on_gpus():
    assert trial_placement(3, None, ["0"], uses_gpu=False).devices == (None, None, None)


@pytest.mark.parametrize(
    "workers, fraction, gpus, needs",
    [
        (3, 0.5, ["0"], "needs 2 GPU(s) (--gpu-fraction 0.5 fits 2 trial(s) on a GPU) but 1 visible"),
        (4, 0.3, ["0"], "needs 2 GPU(s) (--gpu-fraction 0.3 fits 3 trial(s) on a GPU) but 1 visible"),
        (2, None, ["0"], "needs 2 GPU(s) (one trial per GPU) but 1 visible"),
        (5, 0.35, ["0", "1"], "needs 3 GPU(s) (--gpu-fraction 0.35 fits 2 trial(s) on a GPU) but 2 visible"),
    ],
)
def test_more_workers_than_fit_is_refused_in_one_line(workers, fraction, gpus, needs):
    with pytest.raises(OnemlError) as info:
        trial_placement(workers, fraction, gpus, uses_gpu=True)
    message = str(info.value)
    assert message.startswith(f"executor: --workers {workers} {needs}") and len(message.splitlines()) == 1


def test_memory_share_leaves_room_for_each_cuda_context():
    total = 80 * GiB
    assert allocator_fraction(0.5, total) == pytest.approx(0.5 - CONTEXT_RESERVE_BYTES / total)
    # two trials at 0.5: allocators + contexts fit in the card
    assert 2 * (allocator_fraction(0.5, total) * total + CONTEXT_RESERVE_BYTES) <= total
    with pytest.raises(OnemlError, match=r"--gpu-fraction 0.01 of this GPU \(80.0 GiB\) leaves no memory"):
        allocator_fraction(0.01, total)


def test_a_trial_takes_a_free_workers_gpu_not_its_job_index(monkeypatch):
    """2 GPUs, --workers 2 --gpu-fraction 0.5: whatever order trials finish in, two running trials never share a
    GPU (by job index, trials 0 and 1 both landed on GPU 0)."""
    monkeypatch.setattr(devices, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(devices, "gpu_memory_bytes", lambda: 80 * GiB)
    lock, running, clashes, seen = threading.Lock(), {}, [], []

    def fake_process(job, env, started, workers):
        gpu = env["CUDA_VISIBLE_DEVICES"]
        with lock:
            if gpu in running:
                clashes.append((running[gpu], job.label))
            running[gpu] = job.label
            seen.append((job.label, gpu, env["ONEML_GPU_FRACTION"], env["ONEML_CONCURRENT_TRIALS"]))
        time.sleep(float(job.label))
        with lock:
            del running[gpu]
        return {"run_id": job.label, "status": "finished"}

    monkeypatch.setattr(executors, "_in_process", fake_process)
    jobs = [Job({}, None, str(s)) for s in (0.3, 0.05, 0.05, 0.2, 0.05, 0.1)]
    done = []
    run_local(jobs, ExecutorOptions(workers=2, gpu_fraction=0.5), lambda job: None, lambda j, o: done.append(o))
    assert len(done) == len(jobs) and not clashes
    assert {gpu for _, gpu, _, _ in seen} == {"0", "1"}
    assert all(fraction == "0.5" and concurrent == "2" for _, _, fraction, concurrent in seen)


def test_a_study_refuses_more_workers_than_gpus_before_any_trial(monkeypatch):
    monkeypatch.setattr(devices, "visible_gpus", lambda: ["0"])
    started = []
    with pytest.raises(OnemlError, match="--workers 3 needs 2 GPU"):
        run_local([Job({}, None, "a")] * 3, ExecutorOptions(workers=3, gpu_fraction=0.5), started.append, None)
    assert not started


def test_oneml_study_refuses_more_workers_than_gpus_in_one_line_before_recording(tmp_path, capsys, monkeypatch):
    from distkit import write_study

    from clikit import run_cli

    monkeypatch.setattr(devices, "visible_gpus", lambda: ["0"])
    spec = write_study(tmp_path)
    code, _, err = run_cli(capsys, "study", "run", str(spec), "--workers", "3", "--gpu-fraction", "0.5")
    assert code == 2 and "--workers 3 needs 2 GPU(s)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "root" / "mlflow.db").exists() and not (tmp_path / "root" / "runs").exists()
