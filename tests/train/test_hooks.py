"""Every library attribute oneml wraps or overrides still exists in the installed transformers and TRL (#17): an
upgrade that renames one must fail here, not silently change a run."""

from __future__ import annotations

import importlib
import inspect

import pytest

from oneml.train.hooks import PATCHED


@pytest.mark.parametrize("where, attribute", PATCHED, ids=[f"{c}.{a}" for c, a in PATCHED])
def test_every_patched_attribute_exists(where, attribute):
    module, _, name = where.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert callable(getattr(cls, attribute, None)), f"{where}.{attribute} is gone: update oneml/train/hooks.py"


def test_the_list_covers_every_wrap_in_the_code():
    """Each instance attribute the hooks assign is in PATCHED (a new wrap cannot be added without it)."""
    import re

    from oneml.train import hooks

    assigned = set(re.findall(r"trainer\.(\w+) = ", inspect.getsource(hooks)))
    assert assigned <= {a for _, a in PATCHED}, assigned - {a for _, a in PATCHED}
    from oneml.objectives import orpo

    overridden = set(re.findall(r"        def (\w+)\(self", inspect.getsource(orpo._chunked_trainer)))
    assert overridden == {a for c, a in PATCHED if c.endswith("ORPOTrainer")}
