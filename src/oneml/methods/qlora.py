"""QLoRA: LoRA on a quantized frozen base (Dettmers et al. 2023, https://arxiv.org/abs/2305.14314).

    W = Dequant(Q(W0)) + s B A,   Q = 4-bit NormalFloat (nf4) blocks of 64 with (double-quantized) scales

The base is stored in 4 bits (nf4 or fp4) or 8 bits (int8, LLM.int8 without outlier decomposition); the matmuls run
in ``compute_dtype``; A and B stay in full precision and are the only trained weights. Any LoRA-family method can
do the same through its ``quantize`` field (PiSSA: SVD first, residual quantized after). The in-memory quantization
lives in models/quantization.py; merging dequantizes first, so the merged model is a plain float model whose logits
match the quantized + adapter model up to the compute precision (int8 also quantizes the inputs of each matmul,
so expect ~1e-2 relative differences there).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from oneml.methods import METHODS
from oneml.methods.lora import LoRAConfig


class QLoRAConfig(LoRAConfig):
    name: Literal["qlora"] = "qlora"
    complexity: ClassVar[tuple[float, str]] = (
        6,
        "LoRA over a 4-bit base: quantisation settings and kernels to keep in step",
    )
    quantize: Literal["nf4", "fp4", "int8"] = "nf4"
    """Quantize the frozen base: 4-bit nf4 (QLoRA) or fp4, or 8-bit int8 (bitsandbytes)."""


METHODS.register("qlora", QLoRAConfig, "QLoRA: LoRA on a 4-bit NF4 base (double quantization; fp4 and int8 too)")
