"""GraLoRA: the k x k blocks each have rank r / k, the whole update reaches rank k r (LoRA's stays at r) for LoRA's
parameter count, and a rank that k does not divide is refused in one line naming the fields."""

from __future__ import annotations

import pytest
import torch
from methodkit import CTX, tiny

from oneml import OnemlError, load_run_config
from oneml.methods import METHODS


def _trained_like(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen))


def test_blocks_have_rank_r_over_k_and_the_update_reaches_k_r_for_loras_parameters():
    r, k = 4, 2
    gralora = METHODS.get("gralora")(r=r, k=k, target_modules=["q_proj"]).apply(tiny(), CTX)
    lora = METHODS.get("lora")(r=r, target_modules=["q_proj"]).apply(tiny(), CTX)
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert count(gralora) == count(lora)  # the same budget as a rank-r LoRA
    _trained_like(gralora)
    layer = next(m for m in gralora.modules() if hasattr(m, "gralora_A"))
    delta = layer.get_delta_weight("default").float()
    rows, cols = delta.shape[0] // k, delta.shape[1] // k
    for i in range(k):
        for j in range(k):
            block = delta[i * rows : (i + 1) * rows, j * cols : (j + 1) * cols]
            assert torch.linalg.matrix_rank(block) == r // k
    assert torch.linalg.matrix_rank(delta) == k * r  # above LoRA's ceiling r


def test_a_rank_k_does_not_divide_is_refused_in_one_line():
    with pytest.raises(OnemlError) as err:
        load_run_config(None, ["method.name=gralora", "method.r=6", "method.k=4"])
    message = str(err.value)
    assert "\n" not in message and message.startswith("method: r (6) must be a multiple of k (4)")
