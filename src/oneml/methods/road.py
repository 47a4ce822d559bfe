"""RoAd: 2-D rotary adaptation (Liao et al. 2024, https://arxiv.org/abs/2409.00119).

The layer's outputs are paired (element i with i + g/2 inside each group of g = ``group_size``) and every pair is
rotated and scaled by a learned 2 x 2 block:

    h = R W0 x,   R = diag(R_1, ..., R_{d_out/2}),   R_j = [[a_j cos t_j, -a_j sin t_j], [a_j sin t_j, a_j cos t_j]]

(a = 1, t = 0 at init). ``variant``: road_1 shares a_j, t_j per pair (d_out parameters per layer), road_2 has
them per element (2 d_out), road_4 two of each per element (4 d_out). g must divide d_out. Not low-rank: no kappa.
Trains on a 4-bit base of a bfloat16 model (peft does not cast the rotated output back). R W0 is a weight:
mergeable.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import PositiveInt

from oneml.methods import METHODS
from oneml.methods.tuners import LayerTuner


class RoAdConfig(LayerTuner):
    name: Literal["road"] = "road"
    complexity: ClassVar[tuple[float, str]] = (4.5, "2-D rotations of output pairs: a variant and a group size")
    peft_type: ClassVar[str] = "ROAD"
    quantized_needs_bfloat16: ClassVar[bool] = True
    variant: Literal["road_1", "road_2", "road_4"] = "road_1"
    """road_1: one angle and scale per output pair; road_2: per element; road_4: two per element."""
    group_size: PositiveInt = 64
    """g: outputs are paired inside groups of g (must divide every target's output size)."""


METHODS.register("road", RoAdConfig, "RoAd: learned 2-D rotations and scales of output pairs")
