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


def start_from(model: Any, spec: str, root: Path, model_name: str, head: str = "lm") -> Any:
    """The base with the earlier run's trained weights merged in. ``head``: what this run trains ("lm", or "score"
    for a reward model, which may start from a causal LM's result or from another reward model's)."""
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
    earlier_head = type(earlier_cfg.objective).head
    if earlier_head != head and head == "lm":
        raise OnemlError(
            f"model.adapter: run {spec} is a reward model (objective {earlier_cfg.objective.name}), which scores and "
            "does not generate; start from a run whose objective trains a causal LM"
        )
    model = earlier_cfg.objective.with_head(model)  # a reward model's saved weights include its score head
    method = earlier_cfg.method
    if not method.mergeable:
        raise OnemlError(f"model.adapter: a {method.name} result cannot be merged into the base to start from")
    for param in model.parameters():
        param.requires_grad_(False)
    return method.merge(method.load(model, folder))
