"""Real servers for tests: each started as its own process on 127.0.0.1 at a free port, waited for until it
answers, and stopped (its log shown on failure) when the test is done."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TINY = Path(__file__).resolve().parents[1] / "configs" / "studies" / "tiny.yaml"
START_TIMEOUT_S = 300  # an MLflow server took 56 s to answer on 2 cores at load 11 (imports, then migrations)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(cmd: list[str], health: str, log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """Run ``cmd`` until the block ends; enter once ``health`` answers 200."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)  # fmt: skip
    try:
        _wait(proc, health, log)
        yield
    finally:
        _stop(proc)


def _wait(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (a server may fork workers), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def mlflow_server(folder: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """`mlflow server` with a SQLite backend and proxied artifacts in ``folder`` (the command and its env)."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    cmd += ["--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--serve-artifacts"]
    cmd += ["--artifacts-destination", str(folder / "artifacts")]
    # The job executor (a second process for MLflow's GenAI jobs) is no part of tracking: not started.
    return cmd, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def tiny_study(folder: Path, save_adapter: bool = False, **changes) -> Path:
    """configs/studies/tiny.yaml with its runs under ``folder/root`` and top-level keys replaced by ``changes``."""
    import yaml

    data = yaml.safe_load(TINY.read_text())
    data["base"]["tracking"] = {"root": str(folder / "root")}
    data["base"]["train"]["save_adapter"] = save_adapter
    data.update(changes)
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def record_one(uri: str, root: str, index: int, barrier, errors) -> None:
    """One process of a fresh-store race: a run recorded once every process is ready (torch-free: this module
    is all a spawned child imports)."""
    import mlflow.tracking  # noqa: F401 - imported before the barrier, so that the race is on opening the store

    from oneml.tracking import RunRecorder

    barrier.wait(timeout=300)  # every process imported MLflow: now all open the fresh store at the same moment
    try:
        recorder = RunRecorder(uri, root, "oneml")
        recorder.start(f"run-{index}", {"oneml.run_id": f"r{index}"})
        recorder.log_metrics({"train_loss": 1.0}, step=1)
        recorder.finish()
    except Exception as err:
        errors.put(f"{type(err).__name__}: {str(err).splitlines()[0]}")
