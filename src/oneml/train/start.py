"""Starting a run from an earlier one (the SFT -> preference pipeline).

The earlier run's adapter is loaded and merged into the base, and this run's method applies on top.
Merging first makes "the starting point" an ordinary model: DPO's adapter-disabled reference, a frozen
copy and precomputed log-probs all then mean the same thing, the SFT result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from oneml.errors import OnemlError
from oneml.tracking import layout


def resolve_adapter(spec: str, root: Path) -> tuple[Path, dict[str, Any] | None]:
    """(the saved model folder, the earlier run's config if known) for a run id (or a unique prefix), a run folder,
    or a folder of adapter weights: the same run lookup as `oneml eval` and `oneml export`."""
    as_path = Path(spec).expanduser()
    try:
        run = layout.find_run(spec, root, "model.adapter")
    except OnemlError as err:
        if "matches" in str(err):  # an ambiguous prefix is an error, not a reason to look elsewhere
            raise
        run = None
    candidates = ([run / "model"] if run is not None else []) + [as_path / "model", as_path]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.safetensors")):
            config_file = folder.parent / "config.yaml"
            config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else None
            return folder, config
    raise OnemlError(
        f"model.adapter: {spec!r} is neither a run id under {layout.runs_dir(root)} nor a folder with safetensors"
    )


def start_from(model: Any, spec: str, root: Path, model_name: str) -> Any:
    """The base with the earlier run's trained weights merged in."""
    from oneml.config import RunConfig

    folder, earlier = resolve_adapter(spec, root)
    if earlier is None:  # a plain peft adapter folder from elsewhere
        from peft import PeftModel

        return PeftModel.from_pretrained(model, folder).merge_and_unload()
    earlier_cfg = RunConfig.model_validate(earlier)
    if earlier_cfg.model.name != model_name:
        raise OnemlError(
            f"model.adapter: run {spec} was trained on {earlier_cfg.model.name!r}, not {model_name!r}; "
            "set model.name to the same base"
        )
    method = earlier_cfg.method
    if not method.mergeable:
        raise OnemlError(f"model.adapter: a {method.name} result cannot be merged into the base to start from")
    for param in model.parameters():
        param.requires_grad_(False)
    return method.merge(method.load(model, folder))
