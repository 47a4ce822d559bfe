"""Synthetic results with known answers, for the analysis tests.

Studies are written straight into a temporary MLflow store: tags, metrics with step histories and
diagnostics artifacts, exactly as training and studies record them, with no training.

The standard study `methods-demo` has a known answer: dora has the best mean and the smallest spread; lora
r=8 and lora r=16 are drawn from one distribution a little behind it (not distinguishable with 6 seeds);
adalora (with a rank-matrix artifact) and full are clearly worse, full uses the most memory; 6 seeds
each; one failed run, one killed and one tagged pruned (that ended FINISHED, with a too-good loss).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oneml.analysis.results import Configuration, RunData

SEEDS = (0, 1, 2, 3, 4, 5)


@dataclass
class Spec:
    method: str
    grid: dict[str, str]
    loss: float
    """Mean final eval loss."""
    sd: float = 0.004
    memory: float = 1000.0
    params: float = 1e5
    speed: float = 5000.0
    threshold_step: float | None = None
    seeds: tuple[int, ...] = SEEDS
    model: str = "tiny-qwen2"
    track: str = "methods"
    artifacts: dict[str, object] = field(default_factory=dict)


def rank_matrix() -> dict:
    layers = [f"base_model.model.model.layers.{i}.self_attn.{m}" for i in range(4) for m in ("q_proj", "v_proj")]
    steps = list(range(10, 101, 10))
    matrix = [[max(1, 8 - (s // 20) * (1 + (i % 3))) for s in steps] for i in range(len(layers))]
    return {"layers": layers, "steps": steps, "matrix": matrix, "budget": [64] * len(steps)}


def dora_payload() -> dict:
    steps = list(range(0, 101, 10))
    layers = [f"model.layers.{i}.self_attn.q_proj" for i in range(4)]
    magnitude = [[0.001 * (i + 1) * s / 10 for s in steps] for i in range(len(layers))]
    direction = [[None if s == 0 else 0.0005 * (i + 2) * math.sqrt(s) for s in steps] for i in range(len(layers))]
    return {"steps": steps, "layers": layers, "dora_magnitude": magnitude, "dora_direction": direction}


def standard_specs() -> list[Spec]:
    """dora best; lora r=8 and r=16 one distribution, not distinguishable from dora; adalora and full worse."""
    return [
        Spec("lora", {"method": "lora", "method.r": "8"}, 1.4235, sd=0.006, memory=1200, params=2e5, threshold_step=60),
        Spec(
            "lora", {"method": "lora", "method.r": "16"}, 1.4235, sd=0.006, memory=1250, params=4e5, threshold_step=55
        ),
        Spec(
            "dora",
            {"method": "dora", "method.r": "8"},
            1.420,
            sd=0.002,
            memory=1400,
            params=2.1e5,
            speed=4000,
            threshold_step=40,
            artifacts={"dora.json": dora_payload()},
        ),
        Spec(
            "adalora",
            {"method": "adalora", "method.r": "8"},
            1.470,
            sd=0.006,
            memory=1300,
            params=2.5e5,
            threshold_step=70,
            artifacts={"adalora_ranks.json": rank_matrix()},
        ),
        Spec("full", {"method": "full"}, 1.600, sd=0.01, memory=4000, params=5e7, speed=3000, threshold_step=30),
    ]


class StudyWriter:
    """Writes runs with an explicit MlflowClient, the way RunRecorder does."""

    def __init__(self, root: Path, experiment: str = "oneml"):
        from mlflow.tracking import MlflowClient

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiments: dict[str, str] = {}
        self.experiment_id = self.experiment(experiment)

    def experiment(self, name: str) -> str:
        if name not in self.experiments:
            location = (self.root / "artifacts").as_uri()
            self.experiments[name] = self.client.create_experiment(name, artifact_location=location)
        return self.experiments[name]

    def run(self, tags: dict[str, str], metrics: dict[str, float], histories=None, status="FINISHED",
            artifacts=None, params=None, experiment: str | None = None) -> str:  # fmt: skip
        from mlflow.entities import Metric, Param

        exp = self.experiment(experiment) if experiment else self.experiment_id
        run = self.client.create_run(exp, run_name=tags.get("oneml.run_id"), tags=tags)
        rid = run.info.run_id
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 100) for k, v in metrics.items()]
        for key, points in (histories or {}).items():
            items += [Metric(key, float(v), now, int(s)) for s, v in points]
        for i in range(0, len(items), 900):
            self.client.log_batch(rid, metrics=items[i : i + 900])
        if params:
            self.client.log_batch(rid, params=[Param(k, v) for k, v in params.items()])
        for name, payload in (artifacts or {}).items():
            self.client.log_dict(rid, payload, f"diagnostics/{name}")
        self.client.set_terminated(rid, status)
        return rid

    def config_runs(self, study: str | None, spec: Spec, index: int, experiment: str | None = None) -> None:
        config_id = f"cfg{index:03d}{study or 'x'}"[:12]
        for seed in spec.seeds:
            rng = np.random.default_rng(1000 * index + seed)
            loss = spec.loss + spec.sd * rng.standard_normal()
            tags = {
                "oneml.run_id": f"{config_id}-s{seed}",
                "oneml.config_id": config_id,
                "oneml.method": spec.method,
                "oneml.model": spec.model,
                "oneml.objective": "sft",
                "oneml.dataset": "alpaca-demo",
                "oneml.seed": str(seed),
                "hardware.device": "cpu",
                "version.torch": "2.13.0",
            }
            if study:
                tags |= {"oneml.study": study, "oneml.track": spec.track}
                tags |= {f"oneml.grid.{k}": v for k, v in spec.grid.items()}
            params = {"method.name": spec.method, "model.name": spec.model, "train.seed": str(seed)}
            params |= {k: v for k, v in spec.grid.items() if k.startswith("method.") and k != "method.name"}
            self.run(tags, _metrics(spec, loss, rng), _histories(spec, loss, rng), "FINISHED", spec.artifacts,
                     params, experiment)  # fmt: skip


def _metrics(spec: Spec, loss: float, rng) -> dict[str, float]:
    m = {
        "eval_loss": loss,
        "eval_perplexity": math.exp(loss),
        "eval_token_accuracy": 0.9 - 0.3 * loss + 0.002 * rng.standard_normal(),
        "initial_eval_loss": 2.5,
        "trainable_params": spec.params,
        "total_params": 5e7,
        "trainable_percent": 100 * spec.params / 5e7,
        "peak_rss_mib": spec.memory + 5 * rng.standard_normal(),
        "tokens_per_second": spec.speed + 50 * rng.standard_normal(),
        "train_seconds": 20.0,
        "train_wall_seconds": 22.0,
        "steps": 100.0,
    }
    if spec.threshold_step is not None:
        m["steps_to_threshold"] = spec.threshold_step + 10 * int(rng.integers(0, 2))
    return m


def _histories(spec: Spec, loss: float, rng) -> dict[str, list[tuple[int, float]]]:
    steps = list(range(1, 101, 5))
    rate = 25 + 10 * (spec.loss - 1.4) / 0.2
    train = [(s, loss + 1.2 * math.exp(-s / rate) + 0.02 * rng.standard_normal()) for s in steps]
    return {"train_loss": train, "eval_loss": [(0, 2.5), (100, loss)]}


def write_standard_study(root: Path, name: str = "methods-demo", model: str = "tiny-qwen2") -> StudyWriter:
    writer = StudyWriter(root)
    writer.run({"oneml.study": name, "oneml.study_parent": "true"}, {})
    for i, spec in enumerate(standard_specs()):
        spec.model = model
        writer.config_runs(name, spec, i)
    base = {"oneml.study": name, "oneml.method": "lora", "oneml.config_id": "cfg999", "oneml.model": model}
    writer.run(base | {"oneml.seed": "0", "oneml.failure": "RuntimeError: out of memory"}, {}, status="FAILED")
    writer.run(base | {"oneml.seed": "1", "oneml.pruned_reason": "pruned at step 20"}, {}, status="KILLED")
    pruned = {"oneml.seed": "2", "oneml.pruned": "true", "oneml.pruned_reason": "median rule at step 40"}
    writer.run(base | pruned, {"eval_loss": 0.1}, status="FINISHED")  # pruned runs never count, however they ended
    return writer


def write_store(root: Path) -> StudyWriter:
    """Everything the analysis tests read, in one store (creating an MLflow database takes seconds):

    - study ``methods-demo`` (tiny-qwen2) as above, plus its parent run;
    - study ``methods-demo-b``: lora r=8 and dora r=8 on tiny-llama, 3 seeds (cross-study comparison);
    - study ``all-failed``: two failed runs only;
    - experiment ``manual`` (no study tags): lora r=4 and r=8 made by hand, r=8 seed 0 run twice, and a
      single-seed full run.
    """
    writer = write_standard_study(root)
    for i, spec in enumerate(standard_specs()[1:3]):
        spec.model, spec.seeds, spec.grid = "tiny-llama", (0, 1, 2), {**spec.grid, "method.r": "8"}
        writer.config_runs("methods-demo-b", spec, 10 + i)
    for seed in (0, 1):
        tags = {"oneml.study": "all-failed", "oneml.method": "lora", "oneml.seed": str(seed)}
        writer.run(tags | {"oneml.failure": "ValueError: boom"}, {}, status="FAILED")
    manual = [
        Spec("lora", {"method.r": "4"}, 1.45, seeds=(0, 1, 2)),
        Spec("lora", {"method.r": "8"}, 1.44, seeds=(0, 1, 2, 0)),
        Spec("full", {}, 1.40, seeds=(0,)),
    ]
    for i, spec in enumerate(manual):
        writer.config_runs(None, spec, 20 + i, experiment="manual")
    return writer


def make_config(
    label: str, method: str, values: dict, track: str = "t", model: str = "m", **metrics: dict
) -> Configuration:
    """An in-memory configuration: ``values`` = {seed: eval_loss}; ``metrics`` = {name: {seed: value}}."""
    runs = []
    for seed, loss in values.items():
        m = {"eval_loss": float(loss)} | {k: float(v[seed]) for k, v in metrics.items() if seed in v}
        runs.append(
            RunData(
                mlflow_run_id=f"{label}-{seed}",
                name=f"{label}-{seed}",
                status="FINISHED",
                config_id=label,
                method=method,
                model=model,
                objective="sft",
                dataset="d",
                seed=str(seed),
                track=track,
                grid={},
                tags={},
                params={},
                metrics=m,
            )
        )
    return Configuration(label, label, label, method, model, "sft", "d", track, runs)


def normal(mean: float, sd: float, n: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {str(i): mean + sd * x for i, x in enumerate(rng.standard_normal(n))}
