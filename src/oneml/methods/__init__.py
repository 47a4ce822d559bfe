"""The fine-tuning methods: one file each, all behind the `MethodConfig` interface.

A method decides which weights train and how they are initialised, saved, loaded and merged; it may
add optimizer parameter groups (LoRA+) and callbacks (AdaLoRA's rank allocation, SORSA's
regulariser step, per-method diagnostics). `methods/` never imports `objectives/`: a method changes
which weights train, not what they learn.

Every module in this package registers its method(s) on its last line; `import_submodules` imports them
all, so adding a file is all it takes to add a method (and it joins every list and test matrix).
A method that is one peft tuner (VeRA, IA3, OFT, prompt tuning, ...) is a few lines on `tuners.PeftTuner`;
any other peft tuner trains through `method: {name: peft, type: ...}` (anypeft.py, which also says which of
peft's tuners apply to causal LMs). `OBJECTIVE_REFUSALS` is the one list of (method, objective) pairs the
libraries cannot train; `listing.py` is what `oneml methods` and the README's table show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from oneml.registry import Registry, import_submodules
from oneml.schema import Section

if TYPE_CHECKING:
    import torch


def _no_log(metrics: dict[str, float], step: int) -> None:
    return None


def _no_artifact(name: str, payload: Any) -> None:
    return None


@dataclass(frozen=True)
class MethodContext:
    """What a method may need to know about the run it is part of."""

    max_steps: int = 100
    learning_rate: float = 2e-4
    seed: int = 0
    device: str = "cpu"
    gradient_checkpointing: bool = False
    diagnostics_every: int = 10
    """Interval (optimizer steps) for per-layer diagnostics such as kappa(BA) or DoRA magnitudes."""
    sharded: bool = False
    """The parameters will be sharded across processes (FSDP)."""
    master_dtype: str | None = None
    """Where set ("float32"), weights a method trains in full are kept in this dtype when the model loaded in half
    precision by oneml's choice (model.dtype: auto on a GPU): float32 master weights, the forward in the model's
    dtype under autocast. None: trained weights keep the loaded dtype."""
    log_metrics: Callable[[dict[str, float], int], None] = field(default=_no_log)
    """Record metrics at a step (the run's MLflow record)."""
    log_json: Callable[[str, Any], None] = field(default=_no_artifact)
    """Record a JSON artifact (e.g. a layer x step matrix) under the given file name."""
    calibration: Callable[[int], list[dict[str, torch.Tensor]]] | None = None
    """``calibration(n)``: the first n batches (train.batch_size rows each: input_ids, attention_mask, labels) of
    the run's own training rows, never its eval or test rows, for data-driven inits (EVA, CorDA); None outside a
    run."""


OptimizerBuilder = Callable[[list[dict[str, Any]], float, float], Any]
"""(parameter groups, learning rate, weight decay) -> an optimizer of the run's configured kind."""


def adamw(groups: list[dict[str, Any]], learning_rate: float, weight_decay: float) -> Any:
    """A plain torch AdamW: the optimizer every method's own groups went to before ``train.optim`` existed."""
    import torch

    return torch.optim.AdamW(groups, lr=learning_rate, weight_decay=weight_decay)


class MethodConfig(Section):
    """Base of every method config; ``name`` selects it in YAML (``method: {name: lora}``)."""

    name: str
    is_adapter: ClassVar[bool] = True
    """True when the result is a small adapter saved apart from the base; False for full weights."""
    mergeable: ClassVar[bool] = True
    """True when the trained weights can be folded into the base (same architecture, same logits)."""
    complexity: ClassVar[tuple[float, str]]
    """(rank, why) in the decision guide's simplicity ranking, 1 = simplest: what a team must get right and keep
    running (extra hyperparameters, special initialisation or schedules, what has to be stored and served).
    Every method declares its own (a test holds them to it); runs record it, and the guide reads it from them."""
    gradient_checkpointing: ClassVar[bool] = True
    """False when the method breaks with gradient checkpointing (prefix tuning's cache)."""

    identity_defaults: ClassVar[tuple[str, ...]] = ()
    """Keys added after runs had been recorded: left out of the run id while at their default, so that every config
    written before them keeps its run id (config.py)."""

    def mutates_base(self) -> bool:
        """True when the initialisation changes the frozen base weights too (PiSSA, OLoRA, CorDA move part of W0
        into the adapter): a copy of the adapter on the changed base is not the starting model, and the saved
        result carries the conversion back to the original base."""
        return False

    def saved_copies(self) -> int:
        """Copies of the trainable weights one save writes: 2 when the initialisation changes the base too (the
        converted residual is saved with the adapter: PiSSA, OLoRA), else 1. Sizes the free-disk check."""
        return 2 if self.mutates_base() else 1

    def sharding_refusal(self) -> str | None:
        """Why FSDP cannot shard this method (the end of a sentence after 'fsdp cannot ...'), or None."""
        return None

    def multiprocess_refusal(self, strategy: str) -> str | None:
        """Why this method cannot train over several processes with ``strategy`` (ddp, fsdp, zero2, zero3; the end
        of a sentence after 'distributed.strategy: '), or None. FSDP also asks `sharding_refusal`."""
        return None

    def objective_refusal(self, objective: str) -> str | None:
        """Why this method cannot train with ``objective`` (from `OBJECTIVE_REFUSALS`), or None."""
        return OBJECTIVE_REFUSALS.get((self.name, objective))

    def frozen_copy_refusal(self) -> str | None:
        """Why no frozen copy of this method's trained weights can be kept beside them inside the model, or None.

        That copy is how TRL keeps a preference objective's reference when the policy is a peft adapter: a second
        adapter added with the same config, the trained one's values copied into it by parameter name. It is the
        policy at its initial state, i.e. the starting model, even for an init that changed the base (PiSSA: the
        copy holds B0 A0 on the same residual). The end of a sentence after the method's name."""
        return None if self.is_adapter else "trains the weights themselves: there is no adapter to copy"

    def check(self, ctx: MethodContext) -> None:
        """Refuse incompatible run settings with an OnemlError, before anything is loaded."""

    def apply(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        """Return the model prepared for training: trainable weights unfrozen, the rest frozen."""
        raise NotImplementedError

    def optimizer_groups(self, model: torch.nn.Module, learning_rate: float) -> list[dict[str, Any]] | None:
        """Parameter groups for AdamW, or None for one group of every trainable parameter."""
        return None

    fixed_optimizer: ClassVar[str | None] = None
    """The optimizer the method always trains with, from its package (GaLore's ``galore_adamw``): the run records it,
    and a ``train.optim`` other than auto is refused in one line."""
    builds_optimizer: ClassVar[bool] = False
    """`optimizer` builds over its own parameter groups whatever `optimizer_groups` says (LISA over every parameter,
    BAdam's block optimizer around one): with ``train.optim: auto`` that is the kind transformers builds for every
    other method (fused AdamW on torch >= 2.8; train/speedups.py `resolve`), as the run records."""

    def optimizer(
        self, model: torch.nn.Module, learning_rate: float, weight_decay: float, build: OptimizerBuilder | None = None
    ) -> Any:
        """The optimizer this method trains with, or None for the Trainer's own (``train.optim``) over the trainable
        parameters. ``build(groups, lr, weight_decay)`` makes the run's configured kind (train/speedups.py; None: a
        torch AdamW). By default that kind over `optimizer_groups` when the method has its own groups (LoRA+); the
        memory-efficient full fine-tuning methods return their package's optimizer (GaLore, APOLLO, BAdam)."""
        groups = self.optimizer_groups(model, learning_rate)
        if groups is None:
            return None
        return (build or adamw)(groups, learning_rate, weight_decay)

    def callbacks(self, model: torch.nn.Module, ctx: MethodContext) -> list[Any]:
        """Trainer callbacks the method needs (allocation steps, regularisers, diagnostics)."""
        return []

    def save(self, model: torch.nn.Module, path: Path) -> None:
        """Write the trained weights (adapter only for adapter methods) as safetensors."""
        model.save_pretrained(path, safe_serialization=True)

    def save_metadata(self, model: torch.nn.Module, path: Path) -> None:
        """Files `load` needs beside weights that were written for this method by someone else (the Trainer's
        gathered save under FSDP); `save` writes them too."""

    def load(self, base: torch.nn.Module, path: Path) -> torch.nn.Module:
        """Attach what `save` wrote to a freshly loaded base model."""
        from peft import PeftModel

        return PeftModel.from_pretrained(base, path)

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        """Fold the adapter into the base and return a plain transformers model."""
        return model.merge_and_unload()

    def frozen_base(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` (a frozen copy of the starting model, DPO's reference) stored as this method stores its base:
        a quantizing method quantizes it the same way, so that the reference is the base the policy trains on and
        costs its memory, not a half-precision copy's."""
        return model


_LONGER_LOGITS = (
    "TRL's {trainer} trainer scores the logits against the labels position by position, and {method} puts virtual "
    "tokens before the input, so the logits are longer than the labels (TRL's DPO and KTO trim them; {trainer} does "
    "not)"
)
_VIRTUAL_TOKENS = {"prompt_tuning": "prompt tuning", "p_tuning": "p-tuning"}
OBJECTIVE_REFUSALS: dict[tuple[str, str], str] = {
    (method, objective): _LONGER_LOGITS.format(trainer=trainer, method=words)
    for method, words in _VIRTUAL_TOKENS.items()
    for objective, trainer in (("orpo", "ORPO"), ("cpo", "CPO"), ("simpo", "CPO"))
} | {
    (method, "reward"): (
        f"peft runs {words} on input embeddings, where transformers cannot find a padded sequence's last real token, "
        "so a reward model would read its score at padding"
    )
    for method, words in _VIRTUAL_TOKENS.items()
}
OBJECTIVE_REFUSALS |= {
    ("adaption_prompt", "reward"): "peft's adaption prompts adapt causal LMs only, so the new score head cannot train",
    ("trainable_tokens", "reward"): "peft's trainable tokens cannot train other modules, such as the new score head",
    ("prefix", "reward"): "peft's prefix tuning needs past key values, which classification models do not take",
    ("bottleneck", "reward"): "its adapters are oneml's own modules, which neither train nor save the new score head",
}
"""(method, objective) -> why the libraries cannot train that pair: the one list of refused pairs (the test matrix
checks each refusal, and trains every other pair)."""

METHODS: Registry[type[MethodConfig]] = Registry("method")


def adapt(model: torch.nn.Module, config: Any) -> torch.nn.Module:
    """peft's ``get_peft_model`` with the task type of ``model``: SEQ_CLS for a sequence-classification model (a
    reward model), so that peft trains and saves its new score head with the adapter; CAUSAL_LM otherwise."""
    from peft import get_peft_model

    config.task_type = peft_task_type(model)
    return get_peft_model(model, config)


def peft_task_type(model: torch.nn.Module) -> str:
    """SEQ_CLS when ``model`` is its architecture's sequence-classification class, else CAUSAL_LM."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    classifier = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(getattr(model.config, "model_type", ""))
    return "SEQ_CLS" if type(model).__name__ == classifier else "CAUSAL_LM"


import_submodules(
    __name__, __path__, skip={"targets", "diagnostics", "tuners", "listing", "inits", "lorafiles"}
)  # helpers, not entries
