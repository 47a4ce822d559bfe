"""Run assembly and execution: `train(RunConfig) -> RunResult`."""

from oneml.train.runner import RunResult, train

__all__ = ["RunResult", "train"]
