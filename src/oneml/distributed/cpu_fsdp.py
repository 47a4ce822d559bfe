"""FSDP on CPU processes: accelerate's one gap, filled in place.

torch's FSDP2 (``fully_shard``) shards and trains on CPU with the gloo backend, and accelerate's FSDP2 code path
(model preparation, full-state-dict saving) runs there unchanged. What stops it is one decision in
``AcceleratorState.__init__`` (accelerate 1.15, state.py): it turns an FSDP plugin into
``DistributedType.FSDP`` only for GPU-like device types; on ``MULTI_CPU`` it drops the plugin and the run is
silently DDP. This module makes that one decision for CPU too, after accelerate's own initialisation:

- only in the processes of a run that asked for FSDP on CPU (`strategies.prepare`), never elsewhere;
- only when accelerate chose ``MULTI_CPU`` with an FSDP plugin given, so a release that supports CPU FSDP
  itself makes this a no-op;
- in both shared states: ``AcceleratorState()`` copies ``PartialState``'s ``distributed_type`` over its own
  on every later instantiation, which would undo it mid-run (and the final save would write shards).

`world.engine_tags` still checks what accelerate reports, and records ``oneml.engine.cpu_fsdp`` when this ran.
"""

from __future__ import annotations

from typing import Any

_applied = False


def enable() -> None:
    """Let accelerate set up FSDP for CPU processes (idempotent; see the module docstring)."""
    global _applied
    if _applied:
        return
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self: Any, *args: Any, fsdp_plugin: Any = None, **kwargs: Any) -> None:
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            self.oneml_cpu_fsdp = True
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = init
    _applied = True


__all__ = ["enable"]
