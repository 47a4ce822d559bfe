"""oneml: fine-tune causal language models with parameter-efficient methods, and choose among them with evidence.

from oneml import LoRAConfig, RunConfig, train
result = train(RunConfig(method=LoRAConfig(r=16, alpha=32, dropout=0.1, target_modules=["q_proj", "v_proj"])))
"""

import logging as _logging

# bitsandbytes warns at import on CPU that an optional kernels package is missing; it falls back fine.
_logging.getLogger("bitsandbytes").setLevel(_logging.ERROR)

from oneml.config import DataConfig, ModelConfig, RunConfig, TrackingConfig, TrainConfig, load_run_config  # noqa: E402
from oneml.errors import OnemlError  # noqa: E402
from oneml.methods.full import FullConfig  # noqa: E402
from oneml.methods.lora import LoRAConfig  # noqa: E402
from oneml.objectives.sft import SFTObjective  # noqa: E402
from oneml.train import RunResult, train  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "DataConfig",
    "FullConfig",
    "LoRAConfig",
    "ModelConfig",
    "OnemlError",
    "RunConfig",
    "RunResult",
    "SFTObjective",
    "TrackingConfig",
    "TrainConfig",
    "load_run_config",
    "train",
]
