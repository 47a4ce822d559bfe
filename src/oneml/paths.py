"""Where oneml keeps its caches (converted models, fetched data)."""

from __future__ import annotations

import os
from pathlib import Path


def oneml_home() -> Path:
    """$ONEML_HOME, default ~/.cache/oneml."""
    return Path(os.environ.get("ONEML_HOME") or Path.home() / ".cache" / "oneml").expanduser()


def confined(base: Path, name: str, field: str) -> Path:
    """``base / name`` where ``name`` comes from user input: refused when it would write anywhere but directly
    under ``base`` (a separator, ``..``, an absolute path, a hidden or empty name)."""
    from oneml.errors import OnemlError

    if not name or name.startswith(".") or any(c in name for c in "/\\\0") or Path(name).is_absolute():
        raise OnemlError(
            f"{field}: {name!r} must be a plain file name (no '/', '\\', or leading '.'): it names a file under {base}"
        )
    return base / name
