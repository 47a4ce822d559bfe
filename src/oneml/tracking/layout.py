"""Where a run's files live under ``tracking.root``, and how they are written so that a kill never leaves half of
one: the one place the layout is spelled out (training, studies, evaluation, export and the CLI all use it).

    <root>/runs/<run id>/                 a finished run (config.yaml, metrics.json, model/, eval/, ...)
    <root>/runs/.<run id>.tmp-<pid>/      the run being written, renamed into place when complete
    <root>/runs/.<run id>.ckpt/           checkpoints of a run that can resume (train.save_steps)
    <root>/studies/<study>/<run id>.json  a study's journal entry per trial

Torch-free, like everything in tracking/.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from oneml.errors import OnemlError

RUNS = "runs"
STUDIES = "studies"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"


def runs_dir(root: Path) -> Path:
    return Path(root) / RUNS


def run_dir(root: Path, run_id: str) -> Path:
    return runs_dir(root) / run_id


def staging_dir(run_folder: Path) -> Path:
    """The folder a run (or any published folder) is written into before its one rename; unique per process."""
    return run_folder.parent / f".{run_folder.name}.tmp-{os.getpid()}"


def checkpoint_dir(root: Path, run_id: str) -> Path:
    return runs_dir(root) / f".{run_id}.ckpt"


def metrics_file(root: Path, run_id: str) -> Path:
    return run_dir(root, run_id) / METRICS_FILE


def eval_dir(root: Path, run_id: str) -> Path:
    return run_dir(root, run_id) / "eval"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` via a temporary file and one rename: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path: Path, payload: Any, indent: int = 2) -> Path:
    return write_text(path, json.dumps(payload, indent=indent, sort_keys=True, default=str))


def publish(staging: Path, target: Path) -> None:
    """Replace the folder ``target`` with ``staging`` by renames: never a moment with half of either."""
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def find_run(spec: str, root: Path, field: str = "RUN") -> Path:
    """The finished run folder named by ``spec``: a run id or a unique prefix of one under ``root``, or a run
    folder (one with config.yaml). Errors name ``field`` and say what was searched."""
    direct = Path(spec).expanduser()
    if (direct / CONFIG_FILE).is_file():
        return direct.resolve()
    runs = runs_dir(Path(root))
    if spec and "/" not in spec and runs.is_dir():
        matches = sorted(
            p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name.startswith(spec)
        )
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches[:5])
            raise OnemlError(
                f"{field}: {spec!r} matches {len(matches)} runs under {runs} ({names}); give more of the id"
            )
    raise OnemlError(f"{field}: {spec!r} is neither a run id under {runs} nor a run folder (with {CONFIG_FILE})")
