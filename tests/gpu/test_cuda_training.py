"""Training on CUDA: bfloat16 autocast over float32 adapters, float32 master weights for full fine-tuning, the
precision each run records, peak-memory accounting, and a one-process run seeing one GPU."""

from __future__ import annotations

import pytest
import torch
from gpukit import GPU, free_cuda, run_tags, tiny
from transformers import TrainerCallback

from oneml import load_run_config, train
from oneml.models import describe_model

pytestmark = GPU


class AutocastProbe(TrainerCallback):
    """Records the dtype a float32 LoRA factor's output comes out in during training: bfloat16 only under autocast."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.seen: set[torch.dtype] = set()
        layer = next(m for n, m in model.named_modules() if n.endswith("q_proj.lora_A.default"))
        self.weight_dtype = layer.weight.dtype
        self.handle = layer.register_forward_hook(lambda mod, inp, out: self.seen.add(out.dtype))

    def on_train_end(self, args, state, control, **kwargs):
        self.handle.remove()


def test_lora_trains_in_bf16_autocast_over_float32_factors(tmp_path):
    free_cuda()
    probe = AutocastProbe()
    result = train(load_run_config(None, tiny(tmp_path)), progress=False, callbacks=[probe])
    tags, m = run_tags(result), result.metrics
    assert tags["oneml.device"] == "cuda" and tags["oneml.switch.dtype"] == "bfloat16"
    assert tags["oneml.switch.precision"] == "bf16-mixed" and tags["oneml.concurrent_trials"] == "1"
    assert probe.weight_dtype == torch.float32 and probe.seen == {torch.bfloat16}  # fp32 weights, bf16 compute
    assert torch.isfinite(torch.tensor(m["eval_loss"])) and m["eval_loss"] < m["initial_eval_loss"]
    assert 0 < m["first_step_seconds"] < m["train_seconds"] and m["tokens_per_second"] > 0


def test_full_fine_tuning_keeps_float32_master_weights_under_bf16_autocast(tmp_path):
    """16 bytes per parameter at least (float32 weight, gradient, two AdamW moments): the peak says so."""
    free_cuda()
    result = train(load_run_config(None, tiny(tmp_path, "method.name=full")), progress=False)
    tags, m = run_tags(result), result.metrics
    assert tags["oneml.switch.precision"] == "bf16-mixed"
    assert {p.dtype for p in result.model.parameters()} == {torch.float32}
    params = describe_model(result.model)["total_params"]
    assert m["peak_cuda_mib"] * 2**20 >= 16 * params
    assert m["peak_cuda_mib"] * 2**20 < torch.cuda.get_device_properties(0).total_memory


def test_explicit_bfloat16_full_fine_tuning_is_pure_bfloat16(tmp_path):
    free_cuda()
    result = train(load_run_config(None, tiny(tmp_path, "method.name=full", "model.dtype=bfloat16")), progress=False)
    assert run_tags(result)["oneml.switch.precision"] == "bf16"
    assert {p.dtype for p in result.model.parameters()} == {torch.bfloat16}


def test_peak_memory_is_the_training_phase_on_the_device(tmp_path):
    """peak_cuda_mib covers the weights the run holds on the GPU and stays below the card; a larger batch of longer
    rows peaks higher (activations are accounted, not only weights)."""
    peaks = []
    for batch in (1, 8):
        free_cuda()
        cfg = load_run_config(None, tiny(tmp_path / str(batch), f"train.batch_size={batch}", "data.max_length=512"))
        result = train(cfg, progress=False)
        weights = sum(p.numel() * p.element_size() for p in result.model.parameters())
        assert result.metrics["peak_cuda_mib"] * 2**20 >= weights
        peaks.append(result.metrics["peak_cuda_mib"])
    assert peaks[1] > peaks[0]


def test_a_one_process_run_sees_one_gpu(tmp_path):
    """Whatever the host has, the run's process sees one GPU (TRL's trainers refuse nn.DataParallel)."""
    from oneml.distributed import devices

    devices.check_one_device(1, False, "cuda")  # pinned by the conftest's process or by the GPU check's launcher
    result = train(load_run_config(None, tiny(tmp_path, "train.max_steps=1")), progress=False)
    assert result.metrics["steps"] == 1.0
    assert int(run_tags(result)["hardware.gpu_count"]) == 1


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_preference_objectives_train_on_cuda(tmp_path, objective):
    free_cuda()
    extra = [f"objective.name={objective}", "data.dataset=dpo-demo", "data.max_length=256"]
    result = train(load_run_config(None, tiny(tmp_path, *extra)), progress=False)
    assert run_tags(result)["oneml.switch.precision"] == "bf16-mixed"
    assert result.metrics["train_tokens"] > 0 and result.metrics["eval_preference_accuracy"] >= 0
