"""A study on a local two-node Ray cluster: `ray start --head` plus a second `ray start --address` node on this
machine, each with one CPU and its own custom resource, so the trials' MLflow records show where they ran.

The nodes are started with --block as our own child processes and stopped by signalling exactly those (their
raylets and GCS go with them); `ray stop` would stop every Ray process of this user on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from distkit import free_port, oneml, write_study

from oneml.tracking import list_runs, resolve_tracking_uri

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")
# Ray 2.5x enables token authentication for `ray start --head` by default; a local simulation opts out (a real
# cluster keeps it and shares the token: https://docs.ray.io/en/latest/ray-security/token-auth.html).
ENV = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")


def _node(*args: str, log: Path) -> subprocess.Popen:
    cmd = [RAY, "start", "--block", "--num-cpus", "1", "--object-store-memory", str(100 * 2**20), *args]
    return subprocess.Popen(cmd, env=ENV, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _ask(address: str, expression: str):
    """Evaluate ``expression`` (JSON-able) in a fresh driver connected to the cluster; None when unreachable."""
    code = f"import json, ray; ray.init(address={address!r}, log_to_driver=False); print(json.dumps({expression}))"
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None


NODES = "[[n['NodeID'], n['Resources']] for n in ray.nodes() if n['Alive']]"


def _ready(address: str) -> bool:
    """Both nodes alive and both CPUs free (a node can be alive before its raylet takes work)."""
    state = _ask(address, f"[{NODES}, ray.available_resources().get('CPU', 0)]")
    return bool(state) and len(state[0]) == 2 and state[1] == 2


def _wait_ready(address: str, deadline: float | None = None) -> bool:
    deadline = deadline or time.monotonic() + 60
    while not _ready(address):
        if time.monotonic() > deadline:
            return False
        time.sleep(2)
    return True


@pytest.fixture(scope="module")
def cluster():
    # Ray's unix sockets live under --temp-dir; pytest's tmp paths are too long for them (107-byte limit).
    temp = Path(tempfile.mkdtemp(prefix="oneml-ray-", dir="/tmp"))
    address = f"127.0.0.1:{free_port()}"
    head = _node("--head", "--port", address.split(":")[1], "--resources", '{"node_a": 1}',
                 "--include-dashboard", "false", "--temp-dir", str(temp), log=temp / "head.log")  # fmt: skip
    nodes = [head]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(nodes) == 1:
            if _ask(address, NODES):
                nodes.append(_node("--address", address, "--resources", '{"node_b": 1}', log=temp / "worker.log"))
            time.sleep(2)
        assert _wait_ready(address, deadline), (temp / "head.log").read_text()[-2000:]
        yield address
    finally:
        for node in reversed(nodes):  # `ray stop`, for our two nodes only
            os.killpg(node.pid, signal.SIGTERM)
        for node in nodes:
            node.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def _study(folder: Path, name: str) -> Path:
    """The tiny study with one config over two seeds: two trials (no grid; no checkpoints, as they are short)."""
    return write_study(folder, name, drop=("tracks", "save_steps"))


def _trial_hosts(folder: Path) -> list[str]:
    runs = list_runs(resolve_tracking_uri(None, folder / "root"))
    trials = [r for r in runs if r["tags"].get("oneml.study_parent") != "true"]
    seen = [(r["status"], r["tags"].get("oneml.ray_node", "-")[:8], r["tags"].get("oneml.failure", "")) for r in trials]
    assert [r["status"] for r in trials] == ["FINISHED", "FINISHED"], seen
    return sorted(r["tags"]["oneml.ray_node"] for r in trials)


def _run_study(cluster: str, folder: Path, name: str, *args: str) -> None:
    assert _wait_ready(cluster)  # both CPUs free: the previous study's workers may still be releasing theirs
    cmd = ["study", "run", str(_study(folder, name)), "--executor", "ray", "--ray-address", cluster, "-q", *args]
    proc = oneml(*cmd, RAY_AUTH_MODE="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_trials_spread_over_both_nodes(cluster, tmp_path):
    """One CPU per node and one CPU per trial: the two trials can only run at once on different nodes."""
    start = time.perf_counter()
    _run_study(cluster, tmp_path, "spread")
    nodes = _trial_hosts(tmp_path)
    assert len(set(nodes)) == 2, nodes
    print(f"two trials on two nodes in {time.perf_counter() - start:.1f} s")


def test_resource_requests_place_the_trials(cluster, tmp_path):
    """Half a CPU and half of node_b per trial: both fit on node_b only, and run there side by side."""
    _run_study(cluster, tmp_path, "pinned", "--cpus-per-trial", "0.5", "--resource", "node_b=0.5")
    nodes = _trial_hosts(tmp_path)
    assert len(set(nodes)) == 1, nodes
    (worker,) = [node_id for node_id, resources in _ask(cluster, NODES) if resources.get("node_b")]
    assert nodes[0] == worker
