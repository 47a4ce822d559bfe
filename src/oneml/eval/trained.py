"""A finished run, opened again: its config, its folder, its MLflow record and its trained model.

`oneml eval` and `oneml export` both start here. A run is named by its run id (the folder
``<root>/runs/<run id>``, a unique prefix is enough) or by the folder itself. The model is rebuilt the
way training built it: the base from ``model`` (a random-init preset from the same seed gives the same
weights), the earlier run merged in when the run started from one, then the method's saved weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from oneml.errors import OnemlError
from oneml.tracking import layout
from oneml.tracking import tags as tag


@dataclass
class TrainedRun:
    run_id: str
    folder: Path
    """<root>/runs/<run id>: config.yaml, metrics.json, model/."""
    config: Any
    """The run's RunConfig."""
    root: Path
    """The run root the run was recorded under (for runs it started from)."""

    @property
    def model_dir(self) -> Path:
        return self.folder / "model"

    @property
    def metrics(self) -> dict[str, float]:
        import json

        path = self.folder / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def load(self, device: str = "cpu") -> tuple[Any, Any]:
        """(the trained model with its method applied, unmerged; the tokenizer), in eval mode."""
        return load_trained(self, device)

    def mlflow_run_id(self, tracking_uri: str | None = None) -> str | None:
        """The MLflow run that recorded this run (the newest FINISHED one), or None."""
        from mlflow.tracking import MlflowClient

        from oneml.tracking.store import quiet_mlflow, resolve_tracking_uri

        quiet_mlflow()
        uri = resolve_tracking_uri(tracking_uri or self.config.tracking.uri, self.root)
        client = MlflowClient(tracking_uri=uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        if not ids:
            return None
        runs = client.search_runs(
            ids,
            filter_string=f"tags.`{tag.RUN_ID}` = '{self.run_id}' and attributes.status = 'FINISHED'",
            order_by=["start_time DESC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None


def open_run(
    spec: str, root: str | Path = "oneml-runs", tracking_uri: str | None = None, console: Any = None
) -> TrainedRun:
    """The run named by ``spec``: a run id (or unique prefix) under ``root``, or a run folder. A run id found
    only in the tracking store (option > $MLFLOW_TRACKING_URI > the store under ``root``) is downloaded first,
    with the earlier run it started from."""
    from oneml.config import RunConfig

    root = Path(root).resolve()
    folder = _find_or_fetch(spec, root, tracking_uri, console, "RUN")
    config_file = folder / "config.yaml"
    if not config_file.is_file():
        raise OnemlError(f"RUN: {folder} has no config.yaml; is it a finished oneml run folder?")
    config = RunConfig.model_validate(yaml.safe_load(config_file.read_text()))
    if folder.parent.name == layout.RUNS and folder.parent.parent != root:
        root = folder.parent.parent  # a folder given directly carries its own root
    source = config.model.adapter
    if source and not Path(source).expanduser().exists():  # a run id: the run this one started from
        _find_or_fetch(source, root, tracking_uri, console, "model.adapter")
    return TrainedRun(run_id=config.run_id, folder=folder, config=config, root=root)


def _find_or_fetch(spec: str, root: Path, tracking_uri: str | None, console: Any, field: str) -> Path:
    from contextlib import nullcontext

    from oneml.tracking import resolve_tracking_uri
    from oneml.tracking.fetch import fetch_run

    try:
        return layout.find_run(spec, root, field)
    except OnemlError as err:
        if "matches" in str(err):  # an ambiguous prefix is an error, not a reason to look elsewhere
            raise
        missing = err
    uri = resolve_tracking_uri(tracking_uri, root)
    with console.status(f"fetching run {spec} from {uri}") if console else nullcontext():
        fetched = fetch_run(spec, root, uri, field)
    if fetched is None:
        raise OnemlError(f"{missing}; nor a finished run in {uri}")
    return fetched


def load_trained(run: TrainedRun, device: str = "cpu") -> tuple[Any, Any]:
    """Rebuild the trained model exactly as training left it (adapter attached, not merged)."""
    from oneml.models import load_model_and_tokenizer
    from oneml.train.start import start_from

    config = run.config
    if not config.train.save_adapter or not run.model_dir.is_dir():
        raise OnemlError(f"RUN: {run.folder} has no saved model (the run had train.save_adapter: false)")
    model, tokenizer = load_model_and_tokenizer(config.model, device=device, seed=config.train.seed)
    if config.model.adapter:
        model = start_from(model, config.model.adapter, run.root, config.model.name, type(config.objective).head)
    model = config.objective.with_head(model)  # a reward model: its score head, trained and saved by the method
    for param in model.parameters():
        param.requires_grad_(False)
    model = config.method.load(model, run.model_dir)
    return model.to(device).eval(), tokenizer
