"""Training objectives: sft, dpo, orpo.

An objective says how its data is prepared, builds the trainer for it, and evaluates a model on
its held-out data, so the run assembly in `train/` never branches on an objective's name.
"""

from __future__ import annotations

from typing import Any, ClassVar

from oneml.registry import Registry, import_submodules
from oneml.schema import Section


class ObjectiveConfig(Section):
    name: str
    data_kind: ClassVar[str] = "sft"
    """"sft" (conversations) or "preference" (prompt, chosen, rejected)."""

    def check(self, method: Any) -> None:
        """Refuse an incompatible method (OnemlError) before anything is loaded."""

    def prepare(self, data_cfg: Any, tokenizer: Any) -> Any:
        """Train/eval datasets for this objective (a `oneml.data.PreparedData`)."""
        raise NotImplementedError

    def reference_model(self, model: Any) -> Any:
        """A frozen reference built from the starting model (before the method applies), or None."""
        return None

    def build_trainer(self, **kwargs: Any) -> Any:
        """Return a transformers Trainer for this objective (see `oneml.train.runner`)."""
        raise NotImplementedError

    def evaluator(self, trainer: Any, data: Any, tokenizer: Any, max_length: int) -> Any:
        """An object with ``prepare()`` (called once before training) and ``__call__(prefix) -> metrics``."""
        raise NotImplementedError


OBJECTIVES: Registry[type[ObjectiveConfig]] = Registry("objective")

import_submodules(__name__, __path__, skip={"losses", "preference"})  # helpers, not entries
