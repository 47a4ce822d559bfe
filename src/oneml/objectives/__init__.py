"""Training objectives (sft; dpo and orpo come with the preference issue).

Each objective says what data it needs (``data_kind``) and builds the trainer for it, so the run
assembly in `train/` never branches on an objective's name.
"""

from __future__ import annotations

from typing import Any, ClassVar

from oneml.registry import Registry
from oneml.schema import Section


class ObjectiveConfig(Section):
    name: str
    data_kind: ClassVar[str] = "sft"
    """"sft" (conversations) or "preference" (prompt, chosen, rejected)."""

    def build_trainer(self, **kwargs: Any) -> Any:
        """Return a transformers Trainer for this objective (see `oneml.train.runner`)."""
        raise NotImplementedError


OBJECTIVES: Registry[type[ObjectiveConfig]] = Registry("objective")

from oneml.objectives import sft  # noqa: E402,F401
