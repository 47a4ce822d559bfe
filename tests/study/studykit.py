"""Study tests write a tiny study YAML (tiny-llama, 4 steps, 32 rows) under a temporary root."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "studies" / "tiny.yaml"


def write_study(folder: Path, **changes) -> Path:
    """The tiny study with its runs under ``folder/root`` and top-level keys replaced by ``changes``."""
    data = yaml.safe_load(TINY.read_text())
    data["base"]["tracking"] = {"root": str(folder / "root")}
    data.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
