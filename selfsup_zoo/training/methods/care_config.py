"""Configuration of a CARE model: architecture, T-stream size, heads and loss weights.

Defaults are the official recipe; the sections (§) cited are those of ``docs/methods/care.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .base import ConfigDict

__all__ = ["ATTENTION_IMPLS", "CareConfig"]

# How the T-stream attention may be evaluated (see ``CareConfig.attention``).
ATTENTION_IMPLS = ("sdpa", "einsum")


@dataclass
class CareConfig(ConfigDict):
    """Architecture and loss weights of a CARE model; defaults are the official recipe (§3, §5).

    ``arch``/``model_args`` go to ``timm.create_model`` (official runs: ``resnet50``; the README's
    other rows map to ``wide_resnet50_2``, ``resnet101``, ``resnet152``, §1.5). ``img_size`` only
    fixes the T-stream position embeddings: the layer3 map side is ``ceil(img_size / 16)`` (14 at
    224 px, the only size official weights fit, §3.2 / §9 #7). ``sync_tstream_bn`` is off in the
    official recipe (T-stream BNs use per-process statistics, §9 #5); switch it on only to make a
    multi-process run numerically equal to a single-process one.

    ``attention`` selects how the T-stream attention is evaluated: ``"sdpa"`` (default, fused
    ``scaled_dot_product_attention``) or ``"einsum"`` (the official operation order, explicit
    logits; slower). Both compute the same function; ``"einsum"`` exists because the golden parity
    case (§10) is ill-conditioned in float32 (BatchNorm1d over two samples, near-one-hot softmax):
    re-ordering the floating-point operations moves the fea/con2 terms by up to ~6e-5 relative at
    batch 2 (evaluating in float64 moves con2 by ~1e-3), so only the official order reproduces
    those figures to 1e-5. At batch 4 both paths give the official losses to <1e-6 relative.

    Sections (§) are those of ``docs/methods/care.md``.
    """

    arch: str = "resnet50"
    model_args: dict[str, Any] = field(default_factory=dict)
    img_size: int = 224
    tstream_dim_out: int = 2048
    tstream_proj_factor: int = 4
    tstream_heads: int = 4
    tstream_dim_head: int = 128
    tstream_layers: int = 5
    hidden_dim: int = 4096
    out_dim: int = 256
    lambda_fea: float = 100.0  # weight of the T-stream supervision term (official ``fea_loss``)
    con_weight: float = 1.0  # weight of the C-stream BYOL term (official ``con_loss``)
    con2_weight: float = 1.0  # weight of the T-stream BYOL term (official ``con2_loss``)
    sync_tstream_bn: bool = False
    attention: str = "sdpa"

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {self.attention!r}")

    @property
    def fmap_size(self) -> int:
        """Side of the layer3 map (stride 16, every timm ResNet down-sampling rounds up)."""
        return math.ceil(self.img_size / 16)

    @classmethod
    def smoke(cls) -> CareConfig:
        """A non-official tiny model for CPU smoke runs and tests: ResNet-50 with one block per
        stage, 64-px views (T-stream map 4x4), one narrow T-stream block and small heads. Official
        checkpoints do not load into it."""
        return cls(
            arch="resnet50",
            model_args={"layers": [1, 1, 1, 1]},
            img_size=64,
            tstream_dim_out=512,
            tstream_layers=1,
            tstream_heads=2,
            tstream_dim_head=32,
            hidden_dim=256,
            out_dim=64,
        )
