"""Failures the machine or the numbers cause, in process: exploding gradients, out of memory, a full disk.

Each must stop the run at once with one actionable line, record it FAILED with that line, remove the staging
folder and publish nothing; problems known before training record nothing at all.
"""

from __future__ import annotations

import errno
import shutil

import pytest
import torch
from reliakit import TINY, records, tiny, tree, write_study
from transformers import TrainerCallback

from clikit import run_cli
from oneml import OnemlError, train
from oneml.config import load_run_config
from oneml.train.guard import DISK_RULE, MiB, is_out_of_memory, memory_advice, needed_bytes


class Blowup(TrainerCallback):
    """From step ``at`` on, every adapter gradient is ``factor`` times larger (large but finite, as when a loss
    surface blows up; weights scaled up instead only saturate the attention and the norms, shrinking them)."""

    def __init__(self, at: int, factor: float = 1e6):
        self.at, self.factor, self.hooks = at, factor, []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.at:
            params = [p for n, p in model.named_parameters() if "lora_" in n]
            self.hooks = [p.register_hook(lambda g: g * self.factor) for p in params]


class RaiseInForward(TrainerCallback):
    """From step ``at`` on, the model's forward raises ``error`` (what an allocator failure looks like)."""

    def __init__(self, at: int, error: BaseException):
        self.at, self.error, self.hook = at, error, None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.at and self.hook is None:
            self.hook = model.register_forward_pre_hook(self._raise)

    def _raise(self, module, args):
        raise self.error


def _failed_record(root, cfg):
    (run,) = records(root, cfg.run_id)
    assert run.info.status == "FAILED"
    assert tree(root / "runs") == []  # no staging folder, no run folder
    return run.data.tags["oneml.failure"]


def test_exploding_gradient_norm_fails_the_run_at_that_step(tmp_path):
    cfg = tiny(tmp_path, "train.eval_before=false")
    assert cfg.train.max_grad_norm_stop == 1e4  # the default catches it
    with pytest.raises(Exception, match=r"gradient norm .* exceeds train.max_grad_norm_stop=10000 at step 4") as info:
        train(cfg, progress=False, callbacks=[Blowup(at=4)])
    assert type(info.value).__name__ == "TrainingDiverged"
    reason = _failed_record(tmp_path, cfg)
    assert reason.startswith("TrainingDiverged: gradient norm") and "at step 4" in reason


@pytest.mark.slow
def test_the_gradient_norm_stop_can_be_turned_off(tmp_path):
    cfg = tiny(tmp_path, "train.eval_before=false", "train.max_grad_norm_stop=null", "train.max_steps=4")
    result = train(cfg, progress=False, callbacks=[Blowup(at=3)])
    assert result.metrics["steps"] == 4  # clipping kept it going; nothing stopped it


def test_a_study_goes_on_after_an_exploding_run(tmp_path):
    from oneml.study import load_study
    from oneml.study.run import run_study, study_status

    tracks = {"ok": {"grid": {"method.r": [4]}}, "touchy": {"grid": {"train.max_grad_norm_stop": [1e-6]}}}
    spec = load_study(write_study(tmp_path, tracks=tracks, seeds=[0]))
    result = run_study(spec, progress=False)
    assert sorted(result.states.values()) == ["failed", "finished"]
    (failed,) = [r for r in study_status(spec) if r["state"] == "failed"]
    assert failed["track"] == "touchy" and "exceeds train.max_grad_norm_stop=1e-06 at step 1" in failed["reason"]


OUT_OF_MEMORY = [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: out of memory"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
    RuntimeError("MPS backend out of memory (MPS allocated: 1.2 GB)"),
    MemoryError(),
]
NOT_MEMORY = [RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ValueError("out of memory"), OSError()]


@pytest.mark.parametrize("error", OUT_OF_MEMORY + NOT_MEMORY, ids=lambda e: type(e).__name__ + ":" + str(e)[:16])
def test_what_counts_as_out_of_memory(error):
    assert is_out_of_memory(error) == (error in OUT_OF_MEMORY)


def test_out_of_memory_mid_run_is_a_failed_run_with_advice(tmp_path):
    cfg = tiny(tmp_path, "train.eval_before=false")
    with pytest.raises(OnemlError) as info:
        train(cfg, progress=False, callbacks=[RaiseInForward(at=3, error=OUT_OF_MEMORY[0])])
    message = str(info.value)
    assert "\n" not in message and message.startswith("out of memory at step 3; try ")
    for tip in ("train.batch_size=2 with train.grad_accum=2", "train.gradient_checkpointing=true"):
        assert tip in message
    assert "method.quantize=nf4" in message and "data.max_length=48" in message
    assert message in _failed_record(tmp_path, cfg)


def test_out_of_memory_advice_leaves_out_what_the_run_already_does(tmp_path):
    cfg = tiny(tmp_path, "train.batch_size=1", "train.gradient_checkpointing=true", "method.name=qlora")
    assert memory_advice(cfg) == "data.max_length=48"
    cfg = tiny(tmp_path, "train.batch_size=1", "data.max_length=64", "method={name: prefix}")
    assert memory_advice(cfg) == "a smaller model or a device with more memory"


def test_out_of_memory_while_loading_is_one_line_and_records_nothing(tmp_path, monkeypatch, capsys):
    import oneml.models

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(oneml.models, "load_model_and_tokenizer", no_memory)
    args = [a for o in TINY for a in ("--set", o)]
    code, out, err = run_cli(capsys, "train", "-q", *args, "--set", f"tracking.root={tmp_path}")
    assert code == 2 and out == ""
    assert err.strip().startswith("error: out of memory before training; try train.batch_size=2")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()


def test_not_enough_free_space_is_refused_before_anything_is_recorded(tmp_path, monkeypatch, capsys):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10 * MiB))
    args = [a for o in TINY for a in ("--set", o)]
    code, out, err = run_cli(capsys, "train", "-q", *args, "--set", f"tracking.root={tmp_path}")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: tracking.root: {tmp_path.resolve()} has 10 MiB free, this run needs about 64 MiB")
    assert not (tmp_path / "mlflow.db").exists() and tree(tmp_path / "runs") == []


def test_the_free_space_estimate_follows_the_documented_rule(tmp_path):
    sizes = {"trainable_params": 1_000_000}
    plain = needed_bytes(tiny(tmp_path, "train.save_adapter=true"), sizes, local_artifacts=True)
    assert plain == int(1.5 * 4e6 * 2) + 64 * MiB  # adapter in the run folder + the local artifact copy
    ckpt = needed_bytes(tiny(tmp_path, "train.save_adapter=true", "train.save_steps=2"), sizes, local_artifacts=True)
    assert ckpt - plain == int(1.5 * 3 * (4e6 + 8e6))  # 3 checkpoints of weights + AdamW moments
    pissa = needed_bytes(tiny(tmp_path, "method.name=pissa", "train.save_adapter=true"), sizes, local_artifacts=False)
    assert pissa == int(1.5 * 8e6) + 64 * MiB  # rank-2r save, remote artifact store
    for init in ("pissa", "olora"):  # #17: the same initialisation as a LoRA option was counted once
        option = tiny(tmp_path, "method.name=lora", f"method.init={init}", "train.save_adapter=true")
        assert needed_bytes(option, sizes, local_artifacts=False) == pissa
    assert "3 checkpoints" in DISK_RULE


def test_memory_advice_asks_the_method_about_gradient_checkpointing(tmp_path):
    assert "gradient_checkpointing=true" in memory_advice(tiny(tmp_path))
    prefix = tiny(tmp_path).model_copy(update={"method": load_run_config(None, ["method={name: prefix}"]).method})
    assert "gradient_checkpointing" not in memory_advice(prefix)


def test_disk_full_while_writing_the_results_is_a_clean_failure(tmp_path, monkeypatch):
    from oneml.train import runner

    def full(config, setup, trainer, staging, metrics):
        (staging / "metrics.json").write_text("{")  # half a file, as a full disk leaves it
        raise OSError(errno.ENOSPC, "No space left on device", str(staging / "metrics.json"))

    monkeypatch.setattr(runner, "_write_outputs", full)
    cfg = tiny(tmp_path, "train.max_steps=2", "train.eval_before=false")
    with pytest.raises(OnemlError, match=r"^disk full at step 2 writing .*metrics.json: free space under "):
        train(cfg, progress=False)
    assert "disk full at step 2" in _failed_record(tmp_path, cfg)


@pytest.mark.slow
def test_disk_full_mid_checkpoint_leaves_no_checkpoint_and_the_rerun_resumes(tmp_path, monkeypatch):
    from transformers import Trainer

    from oneml.train.checkpoints import checkpoint_dir

    save_rng = Trainer._save_rng_state

    def full_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise OSError(errno.ENOSPC, "No space left on device", output_dir)
        return save_rng(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", full_at_step_4)
    cfg = tiny(tmp_path, "train.save_steps=2", "train.eval_before=false")
    with pytest.raises(OnemlError, match="rerun to resume from the last checkpoint"):
        train(cfg, progress=False)
    ckpt = checkpoint_dir(tmp_path, cfg.run_id)
    assert sorted(p.name for p in ckpt.iterdir() if p.is_dir()) == ["checkpoint-2"]  # no half-written checkpoint-4
    monkeypatch.setattr(Trainer, "_save_rng_state", save_rng)
    result = train(cfg, progress=False)
    assert result.steps_trained == 6 and result.metrics["steps"] == 8
    assert [r.info.status for r in records(tmp_path, cfg.run_id)] == ["FINISHED"]
