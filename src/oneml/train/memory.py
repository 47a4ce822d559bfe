"""Giving the memory a CPU training step frees back to the system (glibc's malloc, Linux).

torch's CPU tensors come from malloc. glibc serves a block above its mmap threshold with its own mapping and
unmaps it on free; smaller blocks come from the heap, whose freed holes the process keeps. The threshold starts
at 128 KiB but rises to the size of every mapped block freed (up to 32 MiB), so after the first freed activation
every activation of a step (MiBs each at 4 x 256 tokens) comes from the heap, and the holes between the tensors a
step still holds stay resident: measured on the demo config (SmolLM2-135M, LoRA, 4 x 256 tokens), 700 MiB more
than the live tensors after one forward pass, and a peak of 3.5 GiB after five steps against 2.0 GiB with the
threshold fixed, more than the stored activations themselves.

Fixing the threshold at 128 KiB (``mallopt(M_MMAP_THRESHOLD)``, ``train.return_memory: true``) keeps every
block above it mapped, so RSS follows the live tensors. The price is a page
fault for every page of every fresh mapping: 2.1 million a step there (8 GiB of activations allocated and freed),
4.4 s of system time on a step of 10 s CPU time, measured on the shared machine. So it is opt-in, for runs that
must fit a memory budget. The setting is process-wide and stays after the run (glibc cannot go back to its rising
threshold); it changes no value computed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter number (malloc.h)."""
THRESHOLD = 128 * 1024
"""glibc's own starting threshold: blocks of a page row or more are mapped."""


@functools.cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no rising threshold to fix)
    except (OSError, AttributeError):
        return None
    return libc


def unavailable_reason(config, device: str) -> str | None:
    """Why freed memory is not returned for this run, or None when it is."""
    if not config.train.return_memory:
        return "train.return_memory is false"
    if device != "cpu":
        return f"the model is on {device}, whose memory malloc does not hold"
    if _libc() is None:
        return "not glibc's malloc"
    return None


def apply(config, device: str) -> str:
    """Fix malloc's mmap threshold where the run allows; returns why not ("" when set)."""
    reason = unavailable_reason(config, device)
    if reason is None and _libc().mallopt(M_MMAP_THRESHOLD, THRESHOLD) != 1:
        reason = "mallopt refused the threshold"
    return reason or ""


def tags(reason: str) -> dict[str, str]:
    from oneml.tracking.tags import SWITCH_PREFIX

    out = {f"{SWITCH_PREFIX}return_memory": "false" if reason else "true"}
    return out | ({f"{SWITCH_PREFIX}return_memory_off_reason": reason} if reason else {})
