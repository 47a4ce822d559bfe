"""oneml: fine-tune causal language models with parameter-efficient methods, and choose among them with evidence.

from oneml import LoRAConfig, RunConfig, train
result = train(RunConfig(method=LoRAConfig(r=16, alpha=32, dropout=0.1, target_modules=["q_proj", "v_proj"])))
"""

import importlib as _importlib
import logging as _logging
import sys as _sys
import types as _types
from typing import TYPE_CHECKING

# bitsandbytes warns at import on CPU that an optional kernels package is missing; it falls back fine. Where the
# package is there (transformers >= 5.25 requires it), bitsandbytes' CPU backend asks the hub for a 4-bit GEMM kernel
# at import, and the `kernels` package warns when the hub is offline: a line that is not ours on every command.
for _name in ("bitsandbytes", "kernels"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)

__version__ = "0.1.0"

# Public name -> defining module, imported on first use: the config pulls in every method and so torch
# (~5 s), which the torch-free parts (analysis/, `oneml report`, `oneml runs`) must not pay for.
_EXPORTS = {
    "AdaLoRAConfig": "oneml.methods.adalora",
    "BottleneckConfig": "oneml.methods.bottleneck",
    "DoRAConfig": "oneml.methods.dora",
    "LoRAPlusConfig": "oneml.methods.loraplus",
    "PiSSAConfig": "oneml.methods.pissa",
    "PrefixConfig": "oneml.methods.prefix",
    "QLoRAConfig": "oneml.methods.qlora",
    "SORSAConfig": "oneml.methods.sorsa",
    "CPOObjective": "oneml.objectives.cpo",
    "DPOObjective": "oneml.objectives.dpo",
    "KTOObjective": "oneml.objectives.kto",
    "ORPOObjective": "oneml.objectives.orpo",
    "RewardObjective": "oneml.objectives.reward",
    "SimPOObjective": "oneml.objectives.cpo",
    "DataConfig": "oneml.config",
    "FullConfig": "oneml.methods.full",
    "LoRAConfig": "oneml.methods.lora",
    "ModelConfig": "oneml.config",
    "OnemlError": "oneml.errors",
    "RunConfig": "oneml.config",
    "RunResult": "oneml.train",
    "SFTObjective": "oneml.objectives.sft",
    "TrackingConfig": "oneml.config",
    "TrainConfig": "oneml.config",
    "load_run_config": "oneml.config",
    "train": "oneml.train",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # the same names for type checkers and linters (redundant aliases mark re-exports)
    from oneml.config import DataConfig as DataConfig
    from oneml.config import ModelConfig as ModelConfig
    from oneml.config import RunConfig as RunConfig
    from oneml.config import TrackingConfig as TrackingConfig
    from oneml.config import TrainConfig as TrainConfig
    from oneml.config import load_run_config as load_run_config
    from oneml.errors import OnemlError as OnemlError
    from oneml.methods.adalora import AdaLoRAConfig as AdaLoRAConfig
    from oneml.methods.bottleneck import BottleneckConfig as BottleneckConfig
    from oneml.methods.dora import DoRAConfig as DoRAConfig
    from oneml.methods.full import FullConfig as FullConfig
    from oneml.methods.lora import LoRAConfig as LoRAConfig
    from oneml.methods.loraplus import LoRAPlusConfig as LoRAPlusConfig
    from oneml.methods.pissa import PiSSAConfig as PiSSAConfig
    from oneml.methods.prefix import PrefixConfig as PrefixConfig
    from oneml.methods.qlora import QLoRAConfig as QLoRAConfig
    from oneml.methods.sorsa import SORSAConfig as SORSAConfig
    from oneml.objectives.cpo import CPOObjective as CPOObjective
    from oneml.objectives.cpo import SimPOObjective as SimPOObjective
    from oneml.objectives.dpo import DPOObjective as DPOObjective
    from oneml.objectives.kto import KTOObjective as KTOObjective
    from oneml.objectives.orpo import ORPOObjective as ORPOObjective
    from oneml.objectives.reward import RewardObjective as RewardObjective
    from oneml.objectives.sft import SFTObjective as SFTObjective
    from oneml.train import RunResult as RunResult
    from oneml.train import train as train


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'oneml' has no attribute {name!r}")
    value = getattr(_importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


class _Package(_types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # Importing the subpackage `oneml.train` binds it on this package, which would hide the function
        # `oneml.train`; the import system sets it after the subpackage ran, so its function is there to take.
        if isinstance(value, _types.ModuleType) and name in _EXPORTS:
            value = getattr(value, name, value)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
