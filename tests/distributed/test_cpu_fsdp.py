"""cpu_fsdp.py: accelerate sets up FSDP for CPU processes only with it (two real gloo processes, no Trainer)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from distkit import free_port

PROBE = textwrap.dedent(
    """
    import sys, torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.tensor import DTensor

    if sys.argv[1] == "shim":
        from oneml.distributed import cpu_fsdp
        cpu_fsdp.enable()
        cpu_fsdp.enable()  # idempotent: one wrapper, not two
    acc = Accelerator(cpu=True, fsdp_plugin=FullyShardedDataParallelPlugin(fsdp_version=2))
    AcceleratorState(cpu=True)  # a later instantiation copies PartialState's type over its own
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    model, _ = acc.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    sharded = any(isinstance(p, DTensor) for p in model.parameters())
    result = f"{acc.state.distributed_type.value} {acc.is_fsdp2} {sharded}"
    open(f"{sys.argv[2]}/rank{acc.process_index}", "w").write(result)
    """
)


def _probe(tmp_path, mode: str) -> set[str]:
    """What each of two ranks reports: accelerate's distributed type, is_fsdp2, whether parameters are sharded."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port())]
    proc = subprocess.run([*cmd, str(script), mode, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {(tmp_path / f"rank{rank}").read_text() for rank in (0, 1)}


def test_accelerate_alone_falls_back_to_ddp_on_cpu(tmp_path):
    """The gap cpu_fsdp fills. When an accelerate release sets FSDP on CPU itself this fails: drop the shim."""
    assert _probe(tmp_path, "plain") == {"MULTI_CPU False False"}


def test_with_the_shim_both_ranks_shard_the_model(tmp_path):
    assert _probe(tmp_path, "shim") == {"FSDP True True"}
