"""VeRA: vector-based random matrix adaptation (Kopiczko et al. 2023, https://arxiv.org/abs/2310.11454).

One pair of frozen random matrices is shared by every adapted layer; each layer trains two scaling vectors only:

    W = W0 + Lambda_b B Lambda_d A,    A: (r x d_in), B: (d_out x r) frozen (Kaiming-uniform from a seed),
                                       Lambda_d = diag(d) (r), Lambda_b = diag(b) (d_out) trained; b0 = 0

so a layer costs r + d_out parameters whatever r is (a large r is cheap: peft's default is 256). The update has
rank <= r, so kappa(B' A') is logged with B' = Lambda_b B, A' = Lambda_d A. The projections are saved with the
adapter (peft's save_projection), so a reload never depends on the seed. Mergeable; trains on a 4-bit base (the
projections then in bfloat16, as TRL trains the vectors).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class VeRAConfig(LayerTuner):
    name: Literal["vera"] = "vera"
    complexity: ClassVar[tuple[float, str]] = (3.2, "LoRA's shape with frozen shared random factors: r and d_initial")
    peft_type: ClassVar[str] = "VERA"
    renamed: ClassVar[dict[str, str]] = {"dropout": "vera_dropout", "projection_seed": "projection_prng_key"}
    pinned: ClassVar[dict[str, Any]] = {"save_projection": True}
    fsdp_refusal: ClassVar[str | None] = (
        "its projections are buffers shared by every layer, left unsharded beside the sharded vectors"
    )
    r: PositiveInt = 256
    """Rank of the shared random projections (costs nothing per layer: only r + d_out scalars train)."""
    d_initial: float = Field(default=0.1, gt=0)
    """Initial value of every entry of d (Lambda_d)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the adapter's input."""
    projection_seed: int = 0
    """Seed of the frozen random projections A and B."""

    def prepare(self, model: Any) -> Any:
        from peft.tuners.vera import VeraLayer

        if self.quantize == "none":
            return model
        # TRL trains a quantized model's adapters in bfloat16 and peft's VeRA casts the input to the vectors' dtype,
        # not its shared frozen projections: they follow (bfloat16 too, as the vectors will be).
        cast: dict[int, torch.Tensor] = {}  # one copy per shared projection, as peft shares them
        for layer in model.modules():
            if isinstance(layer, VeraLayer):
                for bank in (layer.vera_A, layer.vera_B):
                    for key, tensor in bank.items():
                        bank[key] = cast.setdefault(id(tensor), tensor.to(torch.bfloat16))
        return model

    def factors(self, layer: Any, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        A = layer.vera_A[adapter][:, : layer.in_features] * layer.vera_lambda_d[adapter].unsqueeze(-1)
        B = layer.vera_B[adapter][: layer.out_features, :] * layer.vera_lambda_b[adapter].unsqueeze(-1)
        return A, B


METHODS.register("vera", VeRAConfig, "VeRA: frozen shared random low-rank factors, trained scaling vectors")
