"""SERE hyper-parameters (the ``[method]`` table of a recipe, the ``args`` of an official run).

Section numbers (§) refer to ``docs/methods/sere.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from selfsup_zoo.training.methods.base import ConfigDict

from .heads import HEAD_ACTS, HEAD_NORMS


@dataclass
class SereConfig(ConfigDict):
    """SERE hyper-parameters; the defaults are the ViT-S/16 recipe (§5.1).

    Every field is JSON-serialisable (``dataclasses.asdict``). ``model_args`` is passed to
    ``timm.create_model`` for both networks (e.g. a tiny ViT for smoke runs).
    """

    arch: str = "vit_small_patch16_224"
    model_args: dict[str, Any] = field(default_factory=dict)
    drop_path: float = 0.1
    # iBOT head (§2.1)
    out_dim: int = 8192
    patch_out_dim: int = 8192
    shared_head: bool = True
    shared_head_teacher: bool = True
    norm_last_layer: bool = False
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    #: Normalisation after each hidden Linear of the head MLP (official ``--norm_in_head``):
    #: ``None`` (the released runs), ``"bn"``/``"syncbn"`` (BatchNorm over every token of the
    #: batch) or ``"ln"``.
    norm_in_head: str | None = None
    #: Head MLP activation (official ``--act_in_head``): ``"gelu"`` (released runs) or ``"relu"``.
    act_in_head: str = "gelu"
    # iBOT loss (§3.2-§3.4)
    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_patch_temp: float = 0.04
    teacher_patch_temp: float = 0.07
    warmup_teacher_temp_epochs: int = 30
    pred_start_epoch: int = 0
    center_momentum: float = 0.9
    lambda1: float = 1.0
    lambda2: float = 1.0
    # SERE (§3.5-§3.8)
    alpha: float = 0.2
    beta: float = 0.5
    temperature_pixel: float = 0.5
    temperature_channel: float = 0.1
    overlap_size: int = 13
    #: Grid side for local/global pairs. ``None`` = the local token-map side, which is what the
    #: official hard-coded 6 is for 96 px crops at patch 16 (§3.6).
    local_overlap_size: int | None = None
    # schedule
    freeze_last_layer: int = 1
    epochs: int = 100
    #: Micro-batches per optimizer step; the centres are updated once per step with the sum of the
    #: micro-batches (§8 #16; the official read a module-level global for this).
    accum_iter: int = 1

    def __post_init__(self) -> None:
        if self.norm_in_head not in HEAD_NORMS:
            raise ValueError(
                f"norm_in_head must be one of {sorted(HEAD_NORMS, key=str)}, "
                f"got {self.norm_in_head!r} "
                "(the official 'csyncbn'/'psyncbn' variants are not supported)"
            )
        if self.act_in_head not in HEAD_ACTS:
            raise ValueError(
                f"act_in_head must be one of {sorted(HEAD_ACTS)}, got {self.act_in_head!r}"
            )
