"""SERE: iBOT plus spatial and channel feature self-relation distillation, on timm ViTs.

SERE (Li, Gao, Cheng, TPAMI 2023, https://arxiv.org/abs/2206.05184) reproduced on top of timm's
own ``VisionTransformer``. The package, one concern per module:

- :mod:`.config`: :class:`SereConfig`, the hyper-parameters (a recipe's ``[method]`` table).
- :mod:`.schedules`: the teacher temperature per epoch.
- :mod:`.geometry`: crop overlaps, bilinear sampling matrices, position-embedding interpolation.
- :mod:`.heads`: the SERE relation heads and the iBOT projection head.
- :mod:`.views`: one collated batch of views, parsed.
- :mod:`.network`: one branch (timm ViT + mask token + heads) and what it computes on a batch.
- :mod:`.method`: :class:`SereMethod`, the training step composed from the losses in
  ``selfsup_zoo.training.losses`` (ibot, channel_relation, spatial_relation, center).
- :mod:`.official`: full official checkpoints in and out (the layout is
  ``selfsup_zoo.convert.sere``'s).

Every name is re-exported here, where it was importable before the split.
"""

from __future__ import annotations

from selfsup_zoo.convert.sere import SERE_HEAD_NAMES
from selfsup_zoo.training.losses.channel_relation import channel_relation
from selfsup_zoo.training.losses.ibot import soft_cross_entropy
from selfsup_zoo.training.losses.spatial_relation import align_relation, spatial_relation

from .config import SereConfig
from .geometry import bilinear_matrix, interpolate_pos_embed_official, overlap_grids
from .heads import HEAD_ACTS, HEAD_NORMS, IBOTHead, SereHead, TokenMLP, WeightNormLinear
from .method import SereMethod
from .network import SereNetwork
from .official import load_official_checkpoint, to_official_checkpoint
from .schedules import teacher_temp_schedule

__all__ = [
    "HEAD_ACTS",
    "HEAD_NORMS",
    "SERE_HEAD_NAMES",
    "IBOTHead",
    "SereConfig",
    "SereHead",
    "SereMethod",
    "SereNetwork",
    "TokenMLP",
    "WeightNormLinear",
    "align_relation",
    "bilinear_matrix",
    "channel_relation",
    "interpolate_pos_embed_official",
    "load_official_checkpoint",
    "overlap_grids",
    "soft_cross_entropy",
    "spatial_relation",
    "teacher_temp_schedule",
    "to_official_checkpoint",
]
