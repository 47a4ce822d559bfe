"""train.return_memory: what a CPU step frees goes back to the system instead of staying in malloc's heap."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from oneml import load_run_config
from oneml.train import memory

pytestmark = pytest.mark.skipif(memory._libc() is None, reason="glibc's malloc only")

# What a training step does to the heap, in miniature: a large tensor freed (glibc's threshold rises to its
# size), then many activation-sized tensors, the last still alive (a tensor the backward holds), the rest freed.
PROBE = """
import json, sys, torch
sys.path.insert(0, {src!r})
from oneml.train import memory
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) * 1024
if {returned}:
    assert memory.apply(type('C', (), {{'train': type('T', (), {{'return_memory': True}})}}), 'cpu') == ''
big = torch.ones(2 ** 21)  # 8 MiB, mapped
del big  # and unmapped: the threshold rises to 8 MiB
start = rss()
blocks = [torch.ones(2 ** 18) for _ in range(64)]  # 64 x 1 MiB
kept = blocks[-1]
del blocks
print(json.dumps({{"retained": rss() - start}}))
"""


def _retained(returned: bool) -> int:
    code = PROBE.format(src=str(memory.__file__).rsplit("/oneml/", 1)[0], returned=returned)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["retained"]


def test_freed_tensors_leave_the_process():
    kept, returned = _retained(False), _retained(True)
    assert kept > 48 * 2**20  # glibc's default: the 63 freed MiB stay resident behind the live one
    assert returned < 8 * 2**20, (kept, returned)  # the live MiB and little else


@pytest.mark.parametrize(
    ("overrides", "device", "reason"),
    [
        (["train.return_memory=true"], "cpu", ""),
        ([], "cpu", "train.return_memory is false"),
        (["train.return_memory=true"], "cuda", "the model is on cuda, whose memory malloc does not hold"),
    ],
)
def test_the_switch_is_recorded_with_the_reason_it_is_off(overrides, device, reason):
    config = load_run_config(None, overrides)
    assert memory.unavailable_reason(config, device) == (reason or None)
    tags = memory.tags(reason)
    assert tags["oneml.switch.return_memory"] == ("false" if reason else "true")
    assert tags.get("oneml.switch.return_memory_off_reason") == (reason or None)


def test_run_ids_of_earlier_configs_stay_valid():
    assert load_run_config(None, ["train.return_memory=false"]).run_id == "8bf6f9e90e75"  # computed before the key
    assert load_run_config(None, ["train.return_memory=true"]).run_id != "8bf6f9e90e75"
