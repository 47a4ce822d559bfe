"""The run id a config had before the keys added later existed: each such key must be left out of the identity at
its default, so that every run recorded before it keeps its id and a study resumes it instead of training it again.

The list is written out here, not read from config.py, so that a key dropped from (or never added to) config.py's
tables changes an id and fails the tests that use it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

ADDED_LATER: dict[str, dict[str, Any]] = {
    "data": {"test_size": None, "test_fraction": None, "datasets": None, "max_completion_length": None},
    "train": {
        "early_stopping": None,
        "lean_activations": True,
        "return_memory": False,
        "kernels": "none",
        "optim": "auto",
        "tf32": False,
    },
    "model": {"attn_implementation": "auto"},
}
"""Keys of every config, added after runs had been recorded, with the default that leaves them out."""

LORA_ADDED_LATER: dict[str, Any] = {
    "rank_pattern": None,
    "alpha_pattern": None,
    "layers_to_transform": None,
    "layers_pattern": None,
    "lora_bias": False,
    "calibration_batches": 8,
    "eva_rho": 2.0,
    "corda_mode": "ipm",
    "loftq_iter": 1,
}
"""The LoRA family's keys added later, with their defaults."""

DPO_ADDED_LATER: dict[str, Any] = {"loss_type": "sigmoid", "loss_weights": None}
"""DPO's keys added later, with their defaults."""


def id_before(cfg: Any, *, seed: bool = True) -> str:
    """The hash of ``cfg`` without the keys added later, asserting each is at its default (the run id it had before
    them; the config id with ``seed=False``)."""
    payload = {k: v for k, v in cfg.to_dict().items() if k not in ("tracking", "distributed")}
    later = {section: dict(keys) for section, keys in ADDED_LATER.items()}
    if cfg.method.name in ("lora", "qlora", "dora", "pissa", "sorsa", "loraplus"):
        later["method"] = LORA_ADDED_LATER
    if cfg.objective.name == "dpo":
        later["objective"] = DPO_ADDED_LATER
    for section, keys in later.items():
        for key, default in keys.items():
            assert payload[section].pop(key) == default, f"{section}.{key}"
    if not seed:
        payload["train"].pop("seed")
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
