"""AdaLoRA: adaptive budget allocation for low-rank adaptation (Zhang et al. 2023, https://arxiv.org/abs/2303.10512).

Each adapted weight is updated in SVD form,  W = W0 + (alpha / r0) P diag(lambda) Q,  with P (d_out x r0),
Q (r0 x d_in) and lambda (r0) starting at zero, so training starts from the base model. Triplet i (P_:i, lambda_i,
Q_i:) is scored by smoothed sensitivity times uncertainty of |w * dL/dw| (EMAs with beta1, beta2):

    S_i = s(lambda_i) + mean_j s(P_ji) + mean_j s(Q_ij),   s(w) = I_bar(w) * U_bar(w)

and after every optimizer step the lowest-scoring triplets are masked (lambda_i = 0) down to a total rank budget

    b(t) = b0                                              t <= t_i
           bT + (b0 - bT) (1 - (t - t_i) / (T - t_i - t_f))^3   t_i < t <= T - t_f
           bT                                              t > T - t_f

with b0 = init_r * n and bT = target_r * n over the n adapted matrices, T = train.max_steps. The training loss
gains gamma * R with the orthogonality penalty R = mean_k ||P_k^T P_k - I||_F, ||Q_k Q_k^T - I||_F.

peft holds the layers and the allocator; nothing in transformers or TRL calls `update_and_allocate`, so a callback
does it right after each optimizer step (before zero_grad, while the gradients are still there). peft adds gamma * R
to `outputs.loss` in its forward, but TRL's SFTTrainer builds its loss from the fused head's per-token log-probs and
never reads `outputs.loss`, so the penalty would silently vanish. We therefore give peft gamma = 0 and the callback
adds gamma * dR/dw to the gradients itself at the start of each optimizer step, before any micro-batch backward:
the result is the gradient of (mean token loss + gamma * R) whatever the trainer, and clipping and the allocator's
sensitivity scores see it, as they would in peft's own loop.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from transformers import TrainerCallback

from oneml.errors import OnemlError
from oneml.methods import METHODS, MethodConfig, MethodContext, adapt
from oneml.methods.targets import check_targets

TINIT_SHARE = 0.1
TFINAL_SHARE = 0.2
"""Default schedule when tinit/tfinal are unset, as shares of max_steps (peft's worked example: 10 / 20 of 100)."""


class AdaLoRAConfig(MethodConfig):
    name: Literal["adalora"] = "adalora"
    complexity: ClassVar[tuple[float, str]] = (
        8,
        "rank budget schedule (initial/target rank, warm-up, interval): most knobs of the LoRA family",
    )
    init_r: PositiveInt = 12
    """Initial rank of every adapted matrix (the budget starts at init_r per matrix)."""
    target_r: PositiveInt = 4
    """Average rank per matrix at the end of the schedule (the final budget is target_r per matrix)."""
    tinit: int | None = Field(default=None, ge=0)
    """Warm-up steps before ranks are pruned (default: 10% of train.max_steps)."""
    tfinal: int | None = Field(default=None, ge=0)
    """Final steps trained with the ranks frozen at the target budget (default: 20% of train.max_steps)."""
    deltaT: PositiveInt = 1
    """Steps between two budget allocations during the pruning phase."""
    beta1: float = Field(default=0.85, gt=0, lt=1)
    """EMA coefficient of the sensitivity |w * grad|."""
    beta2: float = Field(default=0.85, gt=0, lt=1)
    """EMA coefficient of the sensitivity's uncertainty."""
    orth_reg_weight: float = Field(default=0.5, ge=0)
    """gamma: weight of the orthogonality penalty on P and Q."""
    alpha: float = Field(default=32.0, gt=0)
    """Scale numerator: the update is multiplied by alpha / init_r."""
    dropout: float = Field(default=0.05, ge=0, lt=1)
    """Dropout on the adapter's input."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Linear layers to adapt; the paper adapts every weight matrix, which is where allocation across them pays."""

    @model_validator(mode="after")
    def _ranks(self) -> AdaLoRAConfig:
        if self.target_r >= self.init_r:
            raise OnemlError(f"method.target_r: must be below method.init_r ({self.init_r}), got {self.target_r}")
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise OnemlError("method.target_modules: must name at least one module, or be 'all-linear'")
        return self

    def schedule(self, max_steps: int) -> tuple[int, int]:
        """(tinit, tfinal) for a run of ``max_steps`` optimizer steps."""
        tinit = self.tinit if self.tinit is not None else round(TINIT_SHARE * max_steps)
        tfinal = self.tfinal if self.tfinal is not None else round(TFINAL_SHARE * max_steps)
        return tinit, tfinal

    def check(self, ctx: MethodContext) -> None:
        tinit, tfinal = self.schedule(ctx.max_steps)
        if tinit + tfinal >= ctx.max_steps:
            hint = (
                f"method.tinit={round(TINIT_SHARE * ctx.max_steps)} method.tfinal={round(TFINAL_SHARE * ctx.max_steps)}"
            )
            raise OnemlError(
                f"method.tinit + method.tfinal must be below train.max_steps to leave steps for rank pruning, "
                f"got {tinit} + {tfinal} >= {ctx.max_steps}; e.g. {hint} (or unset both)"
            )

    def peft_config(self, max_steps: int):
        from peft import AdaLoraConfig

        tinit, tfinal = self.schedule(max_steps)
        return AdaLoraConfig(
            init_r=self.init_r,
            target_r=self.target_r,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=self.deltaT,
            beta1=self.beta1,
            beta2=self.beta2,
            orth_reg_weight=0.0,  # the callback applies it (see the module docstring)
            total_step=max_steps,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            task_type="CAUSAL_LM",
        )

    def apply(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        return apply(model, self, ctx)

    def callbacks(self, model: torch.nn.Module, ctx: MethodContext) -> list[Any]:
        return [RankAllocation(model, self.orth_reg_weight, ctx)]

    def frozen_copy_refusal(self) -> str | None:
        return "holds one trainable adapter per model in peft, so TRL cannot add a frozen copy beside it"

    def sharding_refusal(self) -> str | None:
        return (
            "save method adalora from the Trainer's gathered state dict: it needs its own save step, which needs "
            "the whole model in one process; use strategy ddp"
        )

    def save(self, model: torch.nn.Module, path: Path) -> None:
        with warnings.catch_warnings():
            # A layer pruned to rank 0 is legitimate; peft's LoRA save check takes it for an unsharded ZeRO-3 tensor.
            warnings.filterwarnings("ignore", message=".*LoRA tensor\\(s\\) have invalid shape")
            model.save_pretrained(path, safe_serialization=True)

    def load(self, base: torch.nn.Module, path: Path) -> torch.nn.Module:
        from peft import PeftModel

        with warnings.catch_warnings():
            # AdaLoRA's rank_pattern holds per-triplet masks, not LoRA's per-module ranks that peft's check expects.
            warnings.filterwarnings("ignore", message="The following rank_pattern keys did not match")
            # peft rebuilds each layer at its pruned rank from the rank pattern saved in adapter_config.json.
            return PeftModel.from_pretrained(base, path)


def apply(model: torch.nn.Module, cfg: AdaLoRAConfig, ctx: MethodContext) -> torch.nn.Module:
    cfg.check(ctx)
    check_targets(model, cfg.target_modules)
    return adapt(model, cfg.peft_config(ctx.max_steps))


def orthogonal_penalty(factors: list[torch.Tensor]) -> torch.Tensor:
    """R = (1 / K) sum_k ||F_k F_k^T - I||_F over factors F_k of shape (r, d): each Q, and each P transposed.

    The same mean over 2n matrices as peft's AdaLoraModel.forward, so gamma means what it means there.
    """
    total = factors[0].new_zeros(())
    for f in factors:
        gram = f @ f.T  # (r, r)
        total = total + torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], dtype=f.dtype, device=f.device))
    return total / max(len(factors), 1)


def _svd_factors(tuner) -> list[torch.Tensor]:
    """The trainable adapter's Q (r x d_in) and P^T (r x d_out) of every layer, in model order."""
    name = tuner.trainable_adapter_name
    factors = []
    for module in tuner.model.modules():
        if name in getattr(module, "lora_A", {}):
            factors += [module.lora_A[name], module.lora_B[name].T]
    return factors


def _layer_name(param_name: str) -> str:
    """``model.layers.0.self_attn.q_proj.lora_E.default`` -> ``layers.0.self_attn.q_proj``."""
    name = param_name.split(".lora_E")[0]
    return name.removeprefix("model.")


ALLOCATOR_FILE = "adalora_allocator.safetensors"
"""In a checkpoint: the allocator's smoothed sensitivity and uncertainty of every adapter weight."""
RECORD_FILE = "adalora_record.json"
"""In a checkpoint: the live rank pattern and the rank record so far."""


class RankAllocation(TrainerCallback):
    """Runs AdaLoRA's budget schedule, adds the orthogonality gradient, and records the rank of every layer.

    Records ``rank/<layer>``, ``rank_total`` and ``rank_budget`` every ``ctx.diagnostics_every`` steps, and at the end
    the JSON artifact ``adalora_ranks.json``: {layers, steps, matrix (layers x steps), init_r, target_r, budget}.
    """

    def __init__(self, model: torch.nn.Module, orth_reg_weight: float, ctx: MethodContext):
        self.tuner = model.base_model  # peft's AdaLoraModel
        self.gamma = orth_reg_weight
        self.ctx = ctx
        self.peft_cfg = self.tuner.peft_config[self.tuner.trainable_adapter_name]
        adapter = self.tuner.trainable_adapter_name
        self.e_names = [n for n, _ in self.tuner.model.named_parameters() if f"lora_E.{adapter}" in n]
        self.model = model
        self._device = next(model.parameters()).device
        self._resumed: Path | None = None
        # The Trainer's checkpoint saves go through peft's save, which takes the layers AdaLoRA pruned to rank 0 for
        # ZeRO-3 shards never gathered and says so at every checkpoint; in a process training AdaLoRA it is wrong.
        warnings.filterwarnings("ignore", message=".*LoRA tensor\\(s\\) have invalid shape")
        self.steps: list[int] = []
        self.columns: list[list[int]] = []
        self.budgets: list[int] = []

    def ranks(self) -> list[int]:
        """Current rank of each layer: the last allocation's kept triplets (init_r before the first one)."""
        pattern = self.peft_cfg.rank_pattern
        if not pattern:
            return [self.peft_cfg.init_r] * len(self.e_names)
        # peft's save writes the pattern's keys without the adapter name into the live config (a checkpoint after
        # the final allocation leaves them so); its own masking accepts both forms, and so does this.
        adapter = f".{self.tuner.trainable_adapter_name}"
        return [int(sum(pattern[n] if n in pattern else pattern[n.replace(adapter, "")])) for n in self.e_names]

    def record(self, step: int) -> None:
        if self.steps and self.steps[-1] == step:
            return
        ranks = self.ranks()
        budget = self.tuner.rankallocator.budget_schedule(step)[0]
        self.steps.append(step)
        self.columns.append(ranks)
        self.budgets.append(int(budget))
        metrics = {f"rank/{_layer_name(n)}": float(r) for n, r in zip(self.e_names, ranks, strict=True)}
        metrics |= {"rank_total": float(sum(ranks)), "rank_budget": float(budget)}
        self.ctx.log_metrics(metrics, step)

    def on_train_begin(self, args, state, control, **kwargs):
        if self._resumed is not None:  # after transformers loaded the checkpoint's (full-size) adapter weights
            self._restore(self._resumed)
            self._resumed = None
            return
        self.record(state.global_step)

    # --- checkpoints: a run killed after an allocation resumes to the uninterrupted result ---------------------------

    def checkpoint_save(self, folder: Path) -> None:
        """Into a checkpoint being written (train/hooks.py calls it before the checkpoint's rename).

        peft's save shrinks each layer's tensors to its kept ranks (the rank pattern), while the live model keeps
        init_r triplets and transformers resumes by loading the checkpoint into it: the adapter is written again at
        full size (masked triplets are zeros), and the allocator's state beside it."""
        import json

        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        pattern = self.peft_cfg.rank_pattern
        if pattern is not None:
            self.peft_cfg.rank_pattern = None
            try:
                state = get_peft_model_state_dict(self.model, adapter_name=self.tuner.trainable_adapter_name)
            finally:
                self.peft_cfg.rank_pattern = pattern
            save_file({k: v.contiguous() for k, v in state.items()}, str(Path(folder) / "adapter_model.safetensors"))
            config = Path(folder) / "adapter_config.json"
            if config.is_file():
                saved = json.loads(config.read_text())
                saved["rank_pattern"] = None
                config.write_text(json.dumps(saved, indent=2))
        allocator = self.tuner.rankallocator
        tensors = {
            f"{kind}/{name}": value.detach().contiguous()
            for kind in ("ipt", "exp_avg_ipt", "exp_avg_unc")
            for name, value in getattr(allocator, kind).items()
        }
        save_file(tensors, str(Path(folder) / ALLOCATOR_FILE))
        record = {"rank_pattern": pattern, "steps": self.steps, "columns": self.columns, "budgets": self.budgets}
        (Path(folder) / RECORD_FILE).write_text(json.dumps(record))

    def checkpoint_load(self, folder: Path) -> None:
        """From the checkpoint a run resumes from; applied at train begin, after the weights are loaded (a rank
        pattern set before would make peft shrink the live layers while loading them)."""
        if not (Path(folder) / RECORD_FILE).is_file():
            raise OnemlError(
                f"method: checkpoint {folder} holds no AdaLoRA allocator state (written by an older oneml?); delete "
                "it to start over"
            )
        self._resumed = Path(folder)

    def _restore(self, folder: Path) -> None:
        import json

        from safetensors.torch import load_file

        record = json.loads((folder / RECORD_FILE).read_text())
        self.peft_cfg.rank_pattern = record["rank_pattern"]
        self.steps, self.columns, self.budgets = record["steps"], record["columns"], record["budgets"]
        allocator = self.tuner.rankallocator
        allocator.reset_ipt()
        for key, value in load_file(str(folder / ALLOCATOR_FILE)).items():
            kind, name = key.split("/", 1)
            getattr(allocator, kind)[name] = value.to(self._device)

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        if self.gamma == 0:
            return
        # Under fp16 loss scaling the micro-batch gradients arrive scaled; this one must match them.
        scaler = getattr(optimizer, "scaler", None)
        scale = scaler.get_scale() if scaler is not None else 1.0
        with torch.enable_grad():
            penalty = orthogonal_penalty(_svd_factors(self.tuner))
            (penalty * (self.gamma * scale)).backward()

    def on_optimizer_step(self, args, state, control, **kwargs):
        # global_step counts completed steps and is incremented after this event: this step is number global_step + 1,
        # so the schedule's final allocation (step T - tfinal) happens even when tfinal = 0.
        step = state.global_step + 1
        self.tuner.update_and_allocate(step)
        if step % self.ctx.diagnostics_every == 0:
            self.record(step)

    def on_train_end(self, args, state, control, **kwargs):
        self.record(state.global_step)
        matrix = [list(row) for row in zip(*self.columns, strict=True)]  # (layers, steps)
        payload = {
            "layers": [_layer_name(n) for n in self.e_names],
            "steps": self.steps,
            "matrix": matrix,
            "budget": self.budgets,
            "init_r": self.peft_cfg.init_r,
            "target_r": self.peft_cfg.target_r,
        }
        self.ctx.log_json("adalora_ranks.json", payload)


METHODS.register(
    "adalora", AdaLoRAConfig, "AdaLoRA: SVD-form LoRA whose rank budget is pruned from init_r to target_r per matrix"
)
