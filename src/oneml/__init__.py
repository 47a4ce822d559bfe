"""oneml: fine-tune causal language models with parameter-efficient methods, and choose among them with evidence.

from oneml import LoRAConfig, RunConfig, train
result = train(RunConfig(method=LoRAConfig(r=16, alpha=32, dropout=0.1, target_modules=["q_proj", "v_proj"])))
"""

from oneml.config import DataConfig, ModelConfig, RunConfig, TrackingConfig, TrainConfig, load_run_config
from oneml.errors import OnemlError
from oneml.methods.full import FullConfig
from oneml.methods.lora import LoRAConfig
from oneml.objectives.sft import SFTObjective
from oneml.train import RunResult, train

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
