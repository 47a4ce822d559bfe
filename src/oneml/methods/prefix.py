"""Prefix tuning (Li & Liang 2021, https://arxiv.org/abs/2101.00190).

Every attention layer l attends to m trained virtual tokens before the real ones:

    head_l(x) = softmax(q [K_l^prefix ; K_l(x)]^T / sqrt(d)) [V_l^prefix ; V_l(x)],   K_l^prefix, V_l^prefix (m x d_kv)

so the trainable parameters are the m x L x 2 x d_kv prefix itself (d_kv = kv heads x head dim under grouped-query
attention), or, with ``projection``, a table (m x d_kv) passed through an MLP  d_kv -> h -> L * 2 * d_kv  (tanh),
which the paper found trains more stably; after training the MLP's output is all that is kept.

peft injects the prefix as ``past_key_values``; the real tokens keep their own labels (nothing is concatenated to
them, unlike prompt tuning), so TRL's fused LM head and our token-weighted evaluation see the same label positions
as without the method. Not mergeable: the prefix changes the attention pattern, not a weight.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import PositiveInt, model_validator

from oneml.errors import OnemlError
from oneml.methods import METHODS, MethodConfig, MethodContext, adapt


class PrefixConfig(MethodConfig):
    name: Literal["prefix"] = "prefix"
    complexity: ClassVar[tuple[float, str]] = (9, "virtual tokens per layer: changes the attention cache, no merge")
    gradient_checkpointing: ClassVar[bool] = False  # the virtual tokens' cache breaks with it (DESIGN.md)
    mergeable: ClassVar[bool] = False
    num_virtual_tokens: PositiveInt = 20
    """m: virtual tokens prepended to the keys and values of every layer."""
    projection: bool = False
    """Reparametrise the prefix through a two-layer tanh MLP (Li & Liang's stable training)."""
    projection_hidden: PositiveInt = 512
    """Hidden width h of the projection MLP."""
    # With projection the table is the MLP's input, not the prefix, so activations cannot apply there.
    init: Literal["activations", "random"] | None = None
    """activations: keys/values of m random tokens (Li & Liang); random: N(0, 1). Default: random iff projection."""

    @model_validator(mode="after")
    def _init_fits(self) -> PrefixConfig:
        if self.projection and self.init == "activations":
            raise OnemlError("method.init: 'activations' sets the prefix directly; use init: random with projection")
        return self

    def check(self, ctx: MethodContext) -> None:
        # Under checkpointing transformers drops the cache from every checkpointed layer (it would be written twice on
        # the replay); the prefix lives in that cache, so the layers lose it and the attention mask no longer fits.
        if ctx.gradient_checkpointing:
            raise OnemlError(
                "method prefix: gradient checkpointing is not supported with prefix tuning (peft's past_key_values "
                "prefix breaks recomputation); set train.gradient_checkpointing: false"
            )

    def peft_config(self):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(
            num_virtual_tokens=self.num_virtual_tokens,
            prefix_projection=self.projection,
            encoder_hidden_size=self.projection_hidden,
            task_type="CAUSAL_LM",
        )

    def apply(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        return apply(model, self, ctx)

    def load(self, base: torch.nn.Module, path: Path) -> torch.nn.Module:
        from peft import PeftModel

        return fix_generation(PeftModel.from_pretrained(base, path))


def apply(model: torch.nn.Module, cfg: PrefixConfig, ctx: MethodContext) -> torch.nn.Module:
    cfg.check(ctx)
    peft_model = adapt(model, cfg.peft_config())
    if (cfg.init or ("random" if cfg.projection else "activations")) == "activations":
        init_from_activations(peft_model, ctx.seed)
    return fix_generation(peft_model)


@torch.no_grad()
def init_from_activations(peft_model, seed: int) -> None:
    """Set the prefix to the keys/values the frozen model computes for m random vocabulary tokens.

    Those keys carry the rotary phase of positions 0..m-1, and the real tokens then sit at m.. (peft offsets
    them by the cache length), so the prefix reads exactly like m real tokens before the input.
    """
    pcfg = peft_model.active_peft_config
    base = peft_model.get_base_model()
    table = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight  # (m, L * 2 * d_kv)
    vocab = base.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, pcfg.num_virtual_tokens), generator=gen).to(table.device)
    out = base(input_ids=ids, use_cache=True)
    cache = out.cache if "cache" in out else out.past_key_values  # renamed in transformers 5
    # peft reads the table as (m, L * 2, heads, head_dim) with K_l at 2l and V_l at 2l + 1.
    kv = torch.stack([torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers])  # (L, 2, H, m, D)
    if kv.shape[0] * kv.shape[1] * kv.shape[2] * kv.shape[4] != table.shape[1]:
        raise OnemlError(
            f"method prefix: cannot read this model's cache into the prefix ({tuple(kv.shape)}); use init: random"
        )
    table.copy_(kv.permute(3, 0, 1, 2, 4).reshape(table.shape).to(table.dtype))


def _renamed(prepare: Callable[..., dict], old: str, new: str) -> Callable[..., dict]:
    def wrapper(*args, **kwargs):
        inputs = prepare(*args, **kwargs)
        if old in inputs:
            inputs[new] = inputs.pop(old)
        return inputs

    return wrapper


def fix_generation(peft_model):
    """Make ``generate`` see the prefix again under transformers 5's ``cache`` keyword.

    transformers 5 hands the KV cache to the model as ``cache``; peft 0.21's prefix code still reads and writes
    ``past_key_values``, so during ``generate`` it never sees the cache it should extend and the model receives both
    keywords, the empty ``cache`` wins, and the prefix is silently dropped (the output is the base model's). We rename
    the keyword on the way into peft's input preparation and back on the way out. Training and evaluation call
    ``forward``, which is unaffected.
    """
    base = peft_model.get_base_model()
    if "cache" not in inspect.signature(type(base).forward).parameters:
        return peft_model  # a transformers that still says past_key_values needs no renaming
    peft_model.base_model_prepare_inputs_for_generation = _renamed(
        peft_model.base_model_prepare_inputs_for_generation, "cache", "past_key_values"
    )
    peft_model.prepare_inputs_for_generation = _renamed(
        peft_model.prepare_inputs_for_generation, "past_key_values", "cache"
    )
    return peft_model


METHODS.register(
    "prefix", PrefixConfig, "Prefix tuning: trained key/value prefixes in every attention layer (not mergeable)"
)
