"""What a study has done, read from the runs themselves: a published run directory means finished; the
study journal (<root>/studies/<name>/<run id>.json) keeps failures, pruning and the steps each run trained."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from oneml.paths import confined
from oneml.study.expand import Trial
from oneml.tracking import layout
from oneml.tracking import tags as tag
from oneml.train.checkpoints import checkpoint_dir, read_json, write_json


def root_of(trial: Trial) -> Path:
    return Path(trial.config.tracking.root).resolve()


def journal_file(trial: Trial) -> Path:
    study = confined(root_of(trial) / "studies", trial.config.tracking.tags[tag.STUDY], "name")
    return study / f"{trial.run_id}.json"


def read_entry(trial: Trial) -> dict[str, Any]:
    return read_json(journal_file(trial)) or {}


def record(trial: Trial, **fields: Any) -> dict[str, Any]:
    entry = read_entry(trial) | fields
    write_json(journal_file(trial), entry)
    return entry


def final_metrics(trial: Trial) -> dict[str, float] | None:
    return read_json(layout.metrics_file(root_of(trial), trial.run_id))


def rung_metrics(trial: Trial, step: int) -> dict[str, float] | None:
    """Metrics at a rung: from the journal (checkpoints go once a run is published), else the run's own file. A run
    that early stopping ended before the rung is finished: its final metrics (the best step's) stand for every
    later rung."""
    final = final_metrics(trial)
    if step == trial.config.train.max_steps or (final is not None and final.get("steps", math.inf) <= step):
        return final
    recorded = read_entry(trial).get("rungs", {}).get(str(step))
    return recorded or read_json(checkpoint_dir(root_of(trial), trial.run_id) / f"rung-{step}.json")


def state(trial: Trial) -> str:
    """finished, pruned, failed, paused, running or pending. A run that early stopping finished before a rung where
    halving then pruned its configuration is pruned: its configuration is out of the comparison, all its seeds."""
    status = read_entry(trial).get("status", "pending")
    if status != "pruned" and final_metrics(trial) is not None:
        return "finished"
    return status
