"""Prometheus metrics (`--metrics-port`): the endpoint speaks the exposition format with each run's numbers and a
study's runs by state, listens on 127.0.0.1 by default, refuses a port in use in one line (exit 2, nothing recorded),
and a real Prometheus server scraping a live tiny run returns the run's loss to a PromQL query."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clikit import run_cli
from oneml import monitoring
from oneml.train.callbacks import LiveMetrics

sys.path.insert(0, str(Path(__file__).resolve().parent / "reliability"))
from reliakit import overrides, tiny, write_study  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(metric, sorted labels): value} from the endpoint, parsed as Prometheus parses it."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _run_labels(run_id="abc123", method="lora", study=""):
    return (("method", method), ("run_id", run_id), ("study", study))


def test_the_endpoint_serves_a_runs_numbers_in_the_exposition_format():
    with monitoring.serve(_free_port()) as server:
        assert server.httpd.server_address[0] == "127.0.0.1"  # the default: this machine only
        live = LiveMetrics(server.folder, {"run_id": "abc123", "method": "lora", "study": ""})
        state = SimpleNamespace(global_step=0, max_steps=20, num_input_tokens_seen=0)
        live.on_train_begin(None, state, None)
        state.global_step, state.num_input_tokens_seen = 5, 4000
        live.on_step_end(None, state, None)
        live.on_log(None, state, None, logs={"loss": 1.25, "learning_rate": 2e-4, "grad_norm": 0.5})
        live.on_evaluate(None, state, None, metrics={"eval_loss": 1.5, "eval_token_accuracy": 0.4})
        got = _scrape(server.url)
    labels = _run_labels()
    assert got["oneml_train_step", labels] == 5 and got["oneml_train_max_steps", labels] == 20
    assert got["oneml_train_loss", labels] == 1.25 and got["oneml_train_learning_rate", labels] == 2e-4
    assert got["oneml_train_grad_norm", labels] == 0.5 and got["oneml_eval_loss", labels] == 1.5
    assert got["oneml_train_tokens_per_second", labels] > 0  # 4000 tokens since the start
    assert got["oneml_memory_rss_bytes", labels] > 2**20
    assert time.time() - got["oneml_run_updated_timestamp_seconds", labels] < 60
    assert {name for name, _ in got} <= set(monitoring.EXPORTED)
    assert not server.folder.exists() and monitoring.ENV not in __import__("os").environ  # closed: nothing left


def test_a_studys_runs_are_counted_by_state(tmp_path):

    from oneml.study import expand, load_study
    from oneml.study.progress import StudyProgress

    trials = expand(load_study(write_study(tmp_path)))
    with monitoring.serve(_free_port()) as server:
        view = StudyProgress(trials, console=None, enabled=False)
        view.started(trials[0].label)
        view.finished(trials[1].label, "finished")
        view.finished(trials[2].label, "failed")
        view.finished(trials[3].label, "pruned")
        view.started(trials[4].label)
        view.finished(trials[4].label, "paused")
        got = _scrape(server.url)
    counts = {dict(labels)["state"]: v for (name, labels), v in got.items() if name == "oneml_study_runs"}
    assert counts == {"queued": 3, "running": 1, "paused": 1, "finished": 1, "failed": 1, "pruned": 1}
    first = _run_labels(trials[0].run_id, "lora", "tiny") + (("state", "running"),)
    assert got["oneml_run_state", tuple(sorted(first))] == 1


def test_a_port_in_use_is_refused_in_one_line_and_records_nothing(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = [a for o in overrides(tmp_path) for a in ("--set", o)]
        code, _, err = run_cli(capsys, "train", "-q", "--metrics-port", str(port), *args)
        assert code == 2
        assert err.strip().startswith(f"error: --metrics-port: cannot listen on 127.0.0.1:{port}: ")
        assert len(err.strip().splitlines()) == 1
        assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()

        code, _, err = run_cli(capsys, "study", "run", str(write_study(tmp_path / "s")), "--metrics-port", str(port))
        assert code == 2 and "--metrics-port: cannot listen" in err
        assert not (tmp_path / "s" / "root").exists()


def _prometheus(folder: Path, target: str) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (Debian: apt-get install prometheus; .ci/run does it)")
    config = folder / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: oneml\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = _free_port()
    cmd = [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"]
    cmd += [f"--storage.tsdb.path={folder / 'tsdb'}", "--log.level=warn"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{port}"


def _query(api: str, promql: str) -> list[dict]:
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    except OSError:  # not up yet
        return []
    return body["data"]["result"] if body.get("status") == "success" else []


def _wait_for(api: str, promql: str, check, proc, timeout: float = 60) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        result = _query(api, promql)
        if result and check(result):
            return result
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never answered {promql!r} as expected; last: {_query(api, promql)}")


def _dashboard_reads(api: str, run_id: str) -> None:
    """Every query of the Grafana dashboard, as Grafana sends it for this run, is valid PromQL to Prometheus, and
    those about a run's training find this run (a study's panels stay empty: no study runs here; no CUDA on CPU)."""
    from test_grafana_dashboard import queries, substituted

    for title, expr in queries():
        url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": substituted(expr, run_id=run_id)})
        body = json.loads(urllib.request.urlopen(url, timeout=10).read())
        assert body["status"] == "success", (title, body)
        if not any(name in expr for name in ("oneml_study_runs", "oneml_run_state", "oneml_memory_cuda_bytes")):
            assert any(r["metric"].get("run_id") == run_id for r in body["data"]["result"]), (title, expr, body)


def test_a_real_prometheus_scrapes_a_live_run_and_returns_its_loss(tmp_path):
    """Prometheus (Debian's package) scrapes the endpoint every second while a tiny run trains in this process;
    PromQL over its HTTP API then returns the run's last training loss, as MLflow recorded it."""
    from mlflow.tracking import MlflowClient

    from oneml import train
    from oneml.tracking import resolve_tracking_uri

    with monitoring.serve(_free_port()) as server:
        proc, api = _prometheus(tmp_path, f"127.0.0.1:{server.port}")
        try:
            _wait_for(api, "up", lambda r: r[0]["value"][1] == "1", proc)  # scraping before the run starts
            cfg = tiny(tmp_path / "runs", "train.max_steps=6", "train.eval_steps=3")
            result = train(cfg, progress=False)
            client = MlflowClient(resolve_tracking_uri(None, tmp_path / "runs"))
            history = client.get_metric_history(result.mlflow_run_id, "train_loss")
            last = max(history, key=lambda m: m.step).value
            selector = f'{{run_id="{cfg.run_id}", method="lora"}}'
            (loss,) = _wait_for(api, f"oneml_train_loss{selector}", lambda r: float(r[0]["value"][1]) == last, proc)
            assert float(loss["value"][1]) == pytest.approx(last)
            (step,) = _wait_for(api, f"max_over_time(oneml_train_step{selector}[5m])", lambda r: True, proc)
            assert float(step["value"][1]) == 6
            final = result.metrics["eval_loss"]  # the evaluation after the last step (the one at step 3 came first)
            same = lambda r: float(r[0]["value"][1]) == pytest.approx(final)  # noqa: E731
            (evals,) = _wait_for(api, f"oneml_eval_loss{selector}", same, proc)
            assert float(evals["value"][1]) == pytest.approx(final)
            _dashboard_reads(api, cfg.run_id)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.slow
def test_a_study_with_worker_processes_exports_every_run_and_the_states(tmp_path, capsys):
    """`oneml study run --workers 2 --metrics-port`: the trials train in worker processes, yet the driver's endpoint
    shows each one's steps and loss, and the study's runs by state, while it runs."""
    import threading

    port = _free_port()
    seen: list[dict] = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                seen.append(_scrape(f"http://127.0.0.1:{port}/metrics"))
            except OSError:
                pass
            time.sleep(0.3)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    study = write_study(tmp_path, seeds=[0], tracks={"main": {"grid": {"method.r": [4, 8]}}})
    try:
        code, _, err = run_cli(capsys, "study", "run", str(study), "--workers", "2", "-q", "--metrics-port", str(port))
    finally:
        stop.set()
        poller.join()
    assert code == 0, err
    assert f"Prometheus metrics at http://127.0.0.1:{port}/metrics" in err
    steps = {dict(k[1])["run_id"]: v for s in seen for k, v in s.items() if k[0] == "oneml_train_step"}
    assert len(steps) == 2 and set(steps.values()) == {4.0}  # both runs, from their worker processes, to the end
    assert any(k[0] == "oneml_train_loss" for s in seen for k in s)
    running = [v for s in seen for k, v in s.items() if k[0] == "oneml_study_runs" and dict(k[1])["state"] == "running"]
    finished = [
        v for s in seen for k, v in s.items() if k[0] == "oneml_study_runs" and dict(k[1])["state"] == "finished"
    ]
    assert max(running) >= 1 and max(finished) >= 1  # (the last one may finish as the endpoint closes)
