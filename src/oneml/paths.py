"""Where oneml keeps its caches (converted models, fetched data)."""

from __future__ import annotations

import os
from pathlib import Path


def oneml_home() -> Path:
    """$ONEML_HOME, default ~/.cache/oneml."""
    return Path(os.environ.get("ONEML_HOME") or Path.home() / ".cache" / "oneml").expanduser()
