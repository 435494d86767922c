"""SERE: iBOT plus spatial and channel feature self-relation distillation, on timm ViTs.

The method reproduces the official training step of SERE (MCG-NKU, TPAMI 2023) on top of timm's own
``VisionTransformer``: the student and the EMA teacher are plain timm models (so the exported
backbone *is* a timm model), and everything the official backbone adds for training (mask token,
official position-embedding interpolation, the four SERE relation heads) lives in this module.

Terminology used below (project spec ``sere.md``): B images per process, two global views
(224 px -> 14x14 tokens) and L local views (96 px -> 6x6 tokens), C channels, H attention heads.

Loss of one step (spec §3.8)::

    L = (4 - alpha - beta) / 2 * (L_cls + L_mim) + alpha * L_spatial + beta * L_channel

Things kept on purpose because the official code does them (see the spec § in each comment): the
SERE heads read pre-final-norm tokens, the student's global relations come from masked views, BN
statistics are shared by both global views, no-overlap pairs still count, border samples are
attenuated by zero padding, and parameter groups follow SERE's own weight-decay rule.

Checkpoint convention: ``export_backbone`` returns the **teacher** backbone, as iBOT and DINO release
teacher weights ("backbone" downloads are teacher weights, spec §5.6).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup_zoo.hub import compare_keys

from .base import ConfigDict, Method, StepInfo

logger = logging.getLogger(__name__)

#: Names of the four SERE relation heads, as in the official backbone (spec §1.3).
SERE_HEAD_NAMES: tuple[str, ...] = (
    "channel_sere",
    "pixel_sere",
    "channel_sere_local",
    "pixel_sere_local",
)


# --------------------------------------------------------------------------------------------------
# Configuration and schedules
# --------------------------------------------------------------------------------------------------


HEAD_NORMS = (None, "bn", "syncbn", "ln")
HEAD_ACTS = ("gelu", "relu")


@dataclass
class SereConfig(ConfigDict):
    """SERE hyper-parameters; the defaults are the ViT-S/16 recipe (spec §5.1).

    Every field is JSON-serialisable (``dataclasses.asdict``). ``model_args`` is passed to
    ``timm.create_model`` for both networks (e.g. a tiny ViT for smoke runs).
    """

    arch: str = "vit_small_patch16_224"
    model_args: dict[str, Any] = field(default_factory=dict)
    drop_path: float = 0.1
    # iBOT head (spec §2.1)
    out_dim: int = 8192
    patch_out_dim: int = 8192
    shared_head: bool = True
    shared_head_teacher: bool = True
    norm_last_layer: bool = False
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    #: Normalisation after each hidden Linear of the head MLP (official ``--norm_in_head``): ``None``
    #: (the released runs), ``"bn"``/``"syncbn"`` (BatchNorm over every token of the batch) or ``"ln"``.
    norm_in_head: str | None = None
    #: Head MLP activation (official ``--act_in_head``): ``"gelu"`` (released runs) or ``"relu"``.
    act_in_head: str = "gelu"
    # iBOT loss (spec §3.2-§3.4)
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
    # SERE (spec §3.5-§3.8)
    alpha: float = 0.2
    beta: float = 0.5
    temperature_pixel: float = 0.5
    temperature_channel: float = 0.1
    overlap_size: int = 13
    #: Grid side for local/global pairs. ``None`` = the local token-map side, which is what the
    #: official hard-coded 6 is for 96 px crops at patch 16 (spec §3.6).
    local_overlap_size: int | None = None
    # schedule
    freeze_last_layer: int = 1
    epochs: int = 100
    #: Micro-batches per optimizer step; the centres are updated once per step with the sum of the
    #: micro-batches (spec §8 #16; the official read a module-level global for this).
    accum_iter: int = 1

    def __post_init__(self) -> None:
        if self.norm_in_head not in HEAD_NORMS:
            raise ValueError(
                f"norm_in_head must be one of {sorted(HEAD_NORMS, key=str)}, got {self.norm_in_head!r} "
                "(the official 'csyncbn'/'psyncbn' variants are not supported)"
            )
        if self.act_in_head not in HEAD_ACTS:
            raise ValueError(
                f"act_in_head must be one of {sorted(HEAD_ACTS)}, got {self.act_in_head!r}"
            )


def teacher_temp_schedule(
    warmup_temp: float, final_temp: float, warmup_epochs: int, epochs: int, start_epoch: int = 0
) -> np.ndarray:
    """Per-epoch teacher temperature (spec §3.4).

    ``start_epoch`` epochs at ``warmup_temp``, then a linear ramp over ``warmup_epochs`` values whose
    last one is already ``final_temp``, then ``final_temp`` (the patch temperature uses
    ``start_epoch = pred_start_epoch``; the CLS temperature uses 0).
    """
    rest = epochs - warmup_epochs - start_epoch
    if rest < 0:
        raise ValueError(
            f"epochs ({epochs}) must be >= warmup epochs ({warmup_epochs}) + start epoch ({start_epoch})"
        )
    return np.concatenate(
        (
            np.full(start_epoch, warmup_temp),
            np.linspace(warmup_temp, final_temp, warmup_epochs),
            np.full(rest, final_temp),
        )
    )


# --------------------------------------------------------------------------------------------------
# Geometry: overlap grids, bilinear resampling, position embeddings
# --------------------------------------------------------------------------------------------------


def overlap_grids(boxes_a: Tensor, boxes_b: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Sampling grids of the overlap of two crops of the same images (spec §3.7).

    ``boxes_*`` are [B, 5] rows (x0, y0, w, h, flip) in original-image pixels. Returns two float32
    [B, size, size, 2] grids in ``grid_sample`` coordinates (x = column, y = row, in [-1, 1]), one
    in each crop's frame, sampling the same ``size x size`` lattice of image points (both ends of
    the overlap included). Flipped crops mirror x. Pairs without overlap get -2 everywhere (every
    sample falls outside the map, spec §3.7 consequence 1).
    """
    if boxes_a.shape != boxes_b.shape or boxes_a.ndim != 2 or boxes_a.shape[1] != 5:
        raise ValueError(
            f"boxes must both be [B, 5], got {tuple(boxes_a.shape)} and {tuple(boxes_b.shape)}"
        )
    if size < 2:
        raise ValueError("overlap grid size must be >= 2")
    a = boxes_a.detach().to("cpu", torch.float64)
    b = boxes_b.detach().to("cpu", torch.float64)
    ox0 = torch.maximum(a[:, 0], b[:, 0])
    oy0 = torch.maximum(a[:, 1], b[:, 1])
    ox1 = torch.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    oy1 = torch.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    valid = (ox0 < ox1) & (oy0 < oy1)
    # Lattice index j = 0..S-1; the fractions are formed in float64 and the lattice in float32, the
    # precision of the official transform (keeps the grids within an ulp of the official ones).
    steps = torch.arange(size, dtype=torch.float32)

    def one(box: Tensor) -> Tensor:
        off_x = ((ox0 - box[:, 0]) / box[:, 2]).float()
        off_y = ((oy0 - box[:, 1]) / box[:, 3]).float()
        ext_x = ((ox1 - ox0) / box[:, 2]).float()
        ext_y = ((oy1 - oy0) / box[:, 3]).float()
        u = off_x[:, None] + steps[None, :] * ext_x[:, None] / (size - 1)  # [B, S] columns
        v = off_y[:, None] + steps[None, :] * ext_y[:, None] / (size - 1)  # [B, S] rows
        flip = box[:, 4] > 0
        u = torch.where(flip[:, None], 1 - u, u)
        grid = torch.stack(
            (u[:, None, :].expand(-1, size, -1), v[:, :, None].expand(-1, -1, size)), dim=-1
        )
        grid = 2 * grid - 1
        return torch.where(valid[:, None, None, None], grid, torch.full_like(grid, -2.0))

    return one(a).to(boxes_a.device), one(b).to(boxes_a.device)


def bilinear_matrix(grid: Tensor, size: int) -> Tensor:
    """Bilinear sampling weights as a matrix: [B, S, S, 2] grid -> [B, S*S, size*size].

    Row p = i*S + j holds the weights with which ``F.grid_sample(mode="bilinear",
    align_corners=False, padding_mode="zeros")`` reads grid point (i, j) from a ``size x size`` map
    flattened row-major. Neighbours outside the map are dropped, so rows on the map border sum to
    0.5 (0.25 in corners): the official edge attenuation (spec §3.7 consequence 2).
    """
    bsz = grid.shape[0]
    g = grid.float().reshape(bsz, -1, 2)
    u = ((g[..., 0] + 1) * size - 1) / 2
    v = ((g[..., 1] + 1) * size - 1) / 2
    u0 = torch.floor(u)
    v0 = torch.floor(v)
    fu = u - u0
    fv = v - v0
    out = torch.zeros(bsz, g.shape[1], size * size, dtype=torch.float32, device=grid.device)
    for du, wu in ((0, 1 - fu), (1, fu)):
        for dv, wv in ((0, 1 - fv), (1, fv)):
            col = u0 + du
            row = v0 + dv
            inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
            index = (row.clamp(0, size - 1) * size + col.clamp(0, size - 1)).long()
            out.scatter_add_(2, index[..., None], (wu * wv * inside)[..., None])
    return out


def align_relation(relation: Tensor, matrix: Tensor) -> Tensor:
    """Resample a relation on both axes: A R A^T per image and head (spec §3.6), in float32.

    ``relation`` [B, H, N, N], ``matrix`` [B, P, N] -> [B, H, P, P]. Equal to the official two
    ``grid_sample`` passes (key axis, then query axis).
    """
    a = matrix.float()[:, None]
    return a @ relation.float() @ a.transpose(-1, -2)


def interpolate_pos_embed_official(pos_embed: Tensor, grid_hw: tuple[int, int]) -> Tensor:
    """DINO/iBOT position-embedding interpolation (spec §1.1, §1.6, §8 #10).

    ``pos_embed`` is [1, 1 + N0, C] (CLS slot first, square N0). Returned unchanged when the token
    grid is square with N0 tokens. Otherwise the patch part is resized bicubically with the *scale
    factor* (g + 0.1) / sqrt(N0) per axis (align_corners False, no antialias) -- not by target size
    as timm does; the two give different values, and only this one reproduces the official losses
    on 96 px crops. (The official code pairs the width factor with the height axis; that only
    matters for non-square inputs, which SERE never trains on, so each axis gets its own factor.)
    """
    h, w = grid_hw
    n0 = pos_embed.shape[1] - 1
    if h * w == n0 and h == w:
        return pos_embed
    side = int(math.isqrt(n0))
    if side * side != n0:
        raise ValueError(f"position embedding grid must be square, got {n0} patch slots")
    dim = pos_embed.shape[-1]
    patch = pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patch = F.interpolate(
        patch,
        scale_factor=((h + 0.1) / side, (w + 0.1) / side),
        mode="bicubic",
        align_corners=False,
    )
    if patch.shape[-2:] != (h, w):
        raise RuntimeError(f"interpolated position grid {tuple(patch.shape[-2:])} != {(h, w)}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, h * w, dim)
    return torch.cat((pos_embed[:, :1], patch), dim=1)


# --------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------


def channel_relation(fmap: Tensor) -> Tensor:
    """Channel self-relation [B, C, s, s] -> [B, C, C] = (Z/s)(Z/s)^T, in float32 (spec §2.2).

    Normalised by the token count N = s^2 of the map; the official divides by a hard-coded 14 / 6
    chosen by crop count (spec §8 #6), which is the same for the recipes.
    """
    z = fmap.float().flatten(2) / math.sqrt(fmap.shape[-2] * fmap.shape[-1])
    return z @ z.transpose(1, 2)


def spatial_relation(fmap: Tensor, num_heads: int) -> Tensor:
    """Spatial self-relation [B, C, s, s] -> [B, H, N, N], per contiguous channel group of d = C/H,
    scaled by d^-0.5, in float32 (spec §2.2). Row = query position, column = key position."""
    b, c = fmap.shape[:2]
    d = c // num_heads
    z = fmap.float().reshape(b, num_heads, d, -1)
    return (z.transpose(-1, -2) @ z) * d**-0.5


class SereHead(nn.Module):
    """One SERE relation head: projection BN -> ReLU (z), predictor 1x1 conv -> BN -> ReLU (p).

    Module layout and key names follow the official ones (``projection.0``, ``predictor.0/1``) so
    that checkpoints map one to one; the conv keeps PyTorch's default init (spec §1.1).
    """

    def __init__(self, dim: int, kind: str, num_heads: int = 1) -> None:
        super().__init__()
        if kind not in ("channel", "spatial"):
            raise ValueError(f"kind must be 'channel' or 'spatial', got {kind!r}")
        self.kind = kind
        self.num_heads = num_heads
        self.projection = nn.Sequential(nn.BatchNorm2d(dim), nn.ReLU(inplace=True))
        self.predictor = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, fmap: Tensor, use_predictor: bool) -> Tensor:
        """Relation of p (student) or of z (teacher) for a [B, C, s, s] map."""
        feat = self.projection(fmap)
        if use_predictor:
            feat = self.predictor(feat)
        # Relations in fp32 even under autocast (spec §3.9, §8 #21).
        with torch.autocast(device_type=fmap.device.type, enabled=False):
            if self.kind == "channel":
                return channel_relation(feat)
            return spatial_relation(feat, self.num_heads)


class WeightNormLinear(nn.Module):
    """Bias-free weight-normalised Linear with the official parameter names ``weight_g`` [out, 1]
    and ``weight_v`` [out, in] (deprecated ``nn.utils.weight_norm`` layout, spec §2.1, §8 #19):
    effective row r = g_r v_r / ||v_r||."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        # PyTorch's default Linear init: the official last layer is created after the head's own
        # trunc-normal init has run, so v keeps it (spec §2.1).
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight_v * (
            self.weight_g / torch.linalg.vector_norm(self.weight_v, dim=1, keepdim=True)
        )
        return F.linear(x, weight)


class TokenMLP(nn.Sequential):
    """``nn.Sequential`` whose BatchNorms normalise over every token: a [B, N, C] input is moved to
    [B, C, N] around each BatchNorm, so the statistics pool batch and tokens (the official
    ``CustomSequential``). Other layers act per token as usual."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        for module in self:
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and x.dim() > 2:
                x = module(x.movedim(-1, 1)).movedim(1, -1)
            else:
                x = module(x)
        return x


def _head_norm(kind: str | None, dim: int) -> nn.Module | None:
    if kind is None:
        return None
    if kind == "bn":
        return nn.BatchNorm1d(dim)
    if kind == "syncbn":
        return nn.SyncBatchNorm(dim)
    if kind == "ln":
        return nn.LayerNorm(dim)
    raise ValueError(f"unknown head norm {kind!r}; use one of {HEAD_NORMS}")


class IBOTHead(nn.Module):
    """iBOT projection head (spec §2.1): 3-layer MLP, L2 norm, weight-normalised last layer(s).

    With ``shared`` the patch projection ``last_layer2`` is the same module as ``last_layer`` (the
    state dict lists both names, ``named_parameters`` once), as in the official head. ``norm``
    (official ``--norm_in_head``) puts a BatchNorm/LayerNorm after each hidden Linear, with the
    official module indices (``mlp.0`` Linear, ``mlp.1`` norm, ``mlp.2`` act, ...).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        patch_out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
        shared: bool = True,
        norm: str | None = None,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        if act not in HEAD_ACTS:
            raise ValueError(f"unknown head activation {act!r}; use one of {HEAD_ACTS}")
        layers: list[nn.Module] = []
        for d_in in (in_dim, hidden_dim):
            layers.append(nn.Linear(d_in, hidden_dim))
            norm_layer = _head_norm(norm, hidden_dim)
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(nn.GELU() if act == "gelu" else nn.ReLU())
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = TokenMLP(*layers)
        #: BatchNorm statistics depend on which tokens go through the MLP together.
        self.batch_stats = norm in ("bn", "syncbn")
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        self.last_layer2 = (
            self.last_layer if shared else WeightNormLinear(bottleneck_dim, patch_out_dim)
        )
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad_(False)
            self.last_layer2.weight_g.requires_grad_(False)

    def _embed(self, x: Tensor) -> Tensor:
        return F.normalize(self.mlp(x), dim=-1, p=2)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """[B, 1+N, C] final-normed tokens -> (CLS logits [B, K], patch logits [B, N, K2])."""
        x = self._embed(tokens)
        return self.last_layer(x[:, 0]), self.last_layer2(x[:, 1:])

    def forward_cls(self, tokens: Tensor) -> Tensor:
        """CLS logits only (local crops: the official patch logits of locals are discarded). Without
        BatchNorm the MLP acts per token, so the patch rows are skipped; with it they still go
        through the MLP, because the official BN statistics pool all tokens of the local crops."""
        if self.batch_stats:
            return self.forward(tokens)[0]
        return self.last_layer(self._embed(tokens[:, 0]))


class SereNetwork(nn.Module):
    """One branch (student or teacher): timm ViT + mask token (student) + SERE heads + iBOT head.

    Our key names relative to a branch: ``backbone.<timm key>``, ``masked_embed``,
    ``<sere head>.*``, ``head.*``. The official layout puts the mask token and the SERE heads under
    ``backbone.`` (see ``to_official_checkpoint``).
    """

    def __init__(self, cfg: SereConfig, *, student: bool) -> None:
        super().__init__()
        backbone = timm.create_model(
            cfg.arch,
            pretrained=False,
            num_classes=0,
            drop_path_rate=cfg.drop_path if student else 0.0,
            **cfg.model_args,
        )
        _check_backbone(backbone)
        # Official init of the class token: truncated normal, std 0.02 (spec §1.1); timm draws it
        # with std 1e-6. Everything else timm initialises as the official code does.
        nn.init.trunc_normal_(backbone.cls_token, std=0.02)
        self.backbone = backbone
        dim = backbone.embed_dim
        num_heads = backbone.blocks[0].attn.num_heads
        if student:
            # Zero-initialised mask token, applied before the position embedding (spec §1.1).
            self.masked_embed = nn.Parameter(torch.zeros(1, dim))
        else:
            self.masked_embed = None
        self.channel_sere = SereHead(dim, "channel")
        self.pixel_sere = SereHead(dim, "spatial", num_heads)
        self.channel_sere_local = SereHead(dim, "channel")
        self.pixel_sere_local = SereHead(dim, "spatial", num_heads)
        patch_dim = (
            cfg.out_dim if (cfg.shared_head or cfg.shared_head_teacher) else cfg.patch_out_dim
        )
        self.head = IBOTHead(
            dim,
            cfg.out_dim,
            patch_dim,
            cfg.head_hidden_dim,
            cfg.head_bottleneck_dim,
            # The teacher head keeps the official default (True); it is never optimised anyway.
            norm_last_layer=cfg.norm_last_layer if student else True,
            shared=cfg.shared_head if student else cfg.shared_head_teacher,
            norm=cfg.norm_in_head,
            act=cfg.act_in_head,
        )

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.backbone.patch_embed.patch_size)  # type: ignore[return-value]

    def encode(self, images: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run the ViT; returns (final-normed tokens [B, 1+N, C], pre-norm patch map [B, C, h, w]).

        Token preparation is done here rather than by timm because the mask token must replace
        patch embeddings before the position embedding is added, and the position embedding must
        use the official interpolation (spec §1.1, §1.6).
        """
        vit = self.backbone
        x = vit.patch_embed.proj(images)  # [B, C, h, w]
        bsz, dim, h, w = x.shape
        if mask is not None:
            if self.masked_embed is None:
                raise RuntimeError(
                    "this branch has no mask token (teacher); masks are for the student"
                )
            if mask.shape != (bsz, h, w):
                raise ValueError(f"mask shape {tuple(mask.shape)} != token grid {(bsz, h, w)}")
            token = self.masked_embed.to(x.dtype).reshape(1, dim, 1, 1)
            x = torch.where(mask[:, None].to(torch.bool), token, x)
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat((vit.cls_token.expand(bsz, -1, -1), x), dim=1)
        x = x + interpolate_pos_embed_official(vit.pos_embed, (h, w))
        x = vit.pos_drop(x)
        x = vit.norm_pre(x)
        for block in vit.blocks:
            x = block(x)
        # SERE heads read the last block's tokens before the final LayerNorm (spec §2.2, §8 #2).
        fmap = x[:, 1:].transpose(1, 2).reshape(bsz, dim, h, w)
        return vit.norm(x), fmap


def _check_backbone(vit: nn.Module) -> None:
    """Refuse timm configurations whose token layout the SERE training path does not model."""
    problems = []
    if getattr(vit, "cls_token", None) is None:
        problems.append("no class token")
    if getattr(vit, "num_prefix_tokens", 1) != 1:
        problems.append("prefix/register tokens besides CLS")
    if getattr(vit, "no_embed_class", False):
        problems.append("no_embed_class=True")
    if getattr(vit, "pos_embed", None) is None:
        problems.append("no absolute position embedding")
    if not isinstance(getattr(vit, "patch_drop", nn.Identity()), nn.Identity):
        problems.append("patch dropout")
    if problems:
        raise ValueError(f"unsupported ViT for SERE: {', '.join(problems)}")


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------


def soft_cross_entropy(target_probs: Tensor, student_logits: Tensor) -> Tensor:
    """Per-row cross-entropy  sum_k -P[k] log_softmax(s)[k]  over the last axis, in float32."""
    # Negating the sum, not the targets, saves a copy of P per call with identical values.
    return -torch.sum(target_probs.float() * F.log_softmax(student_logits.float(), dim=-1), dim=-1)


def _fp32(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


def _as_views(value: Any, name: str) -> Tensor | None:
    """Batch entries are [V, B, ...] tensors; a list of per-view tensors is stacked."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value
    if isinstance(value, Sequence):
        return torch.stack(list(value)) if len(value) else None
    raise TypeError(f"batch[{name!r}] must be a tensor or a sequence of tensors")


class SereMethod(Method):
    """SERE pre-training (iBOT + spatial/channel self-relation) with timm ViTs."""

    name = "sere"

    def __init__(self, config: SereConfig | None = None) -> None:
        super().__init__()
        cfg = config or SereConfig()
        self.config = cfg
        self.student = SereNetwork(cfg, student=True)
        self.teacher = SereNetwork(cfg, student=False)
        # Official teacher init: non-strict copy of the student's parameters and BN buffers (§5.4).
        self.teacher.load_state_dict(self.student.state_dict(), strict=False)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        patch_dim = (
            cfg.out_dim if (cfg.shared_head or cfg.shared_head_teacher) else cfg.patch_out_dim
        )
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        self.register_buffer("center2", torch.zeros(1, 1, patch_dim))
        self.register_buffer("center_accum", torch.zeros(1, cfg.out_dim))
        self.register_buffer("center2_accum", torch.zeros(1, 1, patch_dim))
        self.register_buffer("accum_count", torch.zeros((), dtype=torch.long))
        self.teacher_temps = teacher_temp_schedule(
            cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs, cfg.epochs
        )
        self.teacher_patch_temps = teacher_temp_schedule(
            cfg.warmup_teacher_patch_temp,
            cfg.teacher_patch_temp,
            cfg.warmup_teacher_temp_epochs,
            cfg.epochs,
            start_epoch=cfg.pred_start_epoch,
        )

    # ---- modes -----------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> SereMethod:
        """The teacher stays in training mode whatever ``mode`` is: the official teacher is never
        switched to eval, so its SERE BNs always use batch statistics (spec §5.4, §8 #4)."""
        super().train(mode)
        self.teacher.train(True)
        return self

    # ---- forward ---------------------------------------------------------------------------------

    def temperatures(self, epoch: int) -> tuple[float, float]:
        """Teacher (CLS, patch) temperatures of an epoch; epochs past the schedule keep the last."""
        idx = min(max(epoch, 0), len(self.teacher_temps) - 1)
        return float(self.teacher_temps[idx]), float(self.teacher_patch_temps[idx])

    def forward(self, batch: dict[str, Any], info: StepInfo) -> dict[str, Tensor]:
        terms, _ = self.forward_with_terms(batch, info)
        return terms

    def forward_with_terms(
        self, batch: dict[str, Any], info: StepInfo
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Forward plus a per-term breakdown (for debugging and the parity tests).

        The breakdown maps ``"cls"``, ``"channel"``, ``"spatial"`` to {(teacher view, student view):
        value} with views named g1, g2, l1.., and ``"mim"`` to {view: per-image tensor}.
        """
        cfg = self.config
        globals_ = _as_views(batch["global_crops"], "global_crops")
        if globals_ is None or globals_.shape[0] != 2:
            raise ValueError("SERE needs exactly two global crops")
        locals_ = _as_views(batch.get("local_crops"), "local_crops")
        n_local = 0 if locals_ is None else locals_.shape[0]
        bsz = globals_.shape[1]
        device = globals_.device
        x_global = globals_.flatten(0, 1)
        masks = batch.get("masks")
        if masks is not None:
            masks = _as_views(masks, "masks").flatten(0, 1).to(torch.bool)
        gboxes = _as_views(batch["global_boxes"], "global_boxes")
        lboxes = _as_views(batch.get("local_boxes"), "local_boxes") if n_local else None
        temp, temp2 = self.temperatures(info.epoch)

        # 1. Teacher on both global views in one call (BN statistics over 2B, spec §8 #5).
        with torch.no_grad():
            t_tokens, t_map = self.teacher.encode(x_global)
            t_cls, t_patch = self.teacher.head(t_tokens)
            # The teacher uses z (no predictor); its predictors' outputs are unused officially (§8 #7).
            t_spatial = self.teacher.pixel_sere(t_map, use_predictor=False)
            t_channel = self.teacher.channel_sere(t_map, use_predictor=False)
        # 2. Student on the *masked* global views (spec §3.1, §8 #3).
        s_tokens, s_map = self.student.encode(x_global, masks)
        s_cls, s_patch = self.student.head(s_tokens)
        s_spatial = self.student.pixel_sere(s_map, use_predictor=True)
        s_channel = self.student.channel_sere(s_map, use_predictor=True)
        # 3. Student on all local views in one call, through the `_local` heads (selected by view
        #    type, not by crop count as the official does, spec §8 #6).
        if n_local:
            l_tokens, l_map = self.student.encode(locals_.flatten(0, 1))
            l_cls = self.student.head.forward_cls(l_tokens)
            l_spatial = self.student.pixel_sere_local(l_map, use_predictor=True)
            l_channel = self.student.channel_sere_local(l_map, use_predictor=True)
        g_side = t_map.shape[-1]
        l_side = l_map.shape[-1] if n_local else 0

        breakdown: dict[str, Any] = {"cls": {}, "mim": {}, "channel": {}, "spatial": {}}
        gnames = ["g1", "g2"]
        lnames = [f"l{i + 1}" for i in range(n_local)]
        with _fp32(device):
            # ---- iBOT: CLS and masked-patch losses (spec §3.2, §3.3) ----
            # fp32 copies made once (no copy in fp32 runs); the centre update reuses them.
            t_cls, t_patch = t_cls.float(), t_patch.float()
            t_cls_p = F.softmax((t_cls - self.center) / temp, dim=-1).chunk(2)
            t_patch_p = F.softmax((t_patch - self.center2) / temp2, dim=-1).chunk(2)
            s_cls_all = s_cls.float() / cfg.student_temp
            student_cls = list(s_cls_all.chunk(2))
            if n_local:
                student_cls += list((l_cls.float() / cfg.student_temp).chunk(n_local))
            s_patch_v = (s_patch.float() / cfg.student_temp).chunk(2)
            mask_v = masks.chunk(2) if masks is not None else None
            vnames = gnames + lnames
            cls_terms, mim_terms = [], []
            for q in range(2):
                for v, s_out in enumerate(student_cls):
                    if v == q:
                        per_token = soft_cross_entropy(t_patch_p[q], s_patch_v[q])  # [B, N]
                        if mask_v is None:
                            per_image = per_token.new_zeros(bsz)
                        else:
                            m = mask_v[q].flatten(1).float()
                            # Per image, then batch mean with unmasked images counted (spec §3.3, §8 #15).
                            per_image = (per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)
                        mim_terms.append(per_image.mean())
                        breakdown["mim"][gnames[q]] = per_image.detach()
                    else:
                        term = soft_cross_entropy(t_cls_p[q], s_out).mean()
                        cls_terms.append(term)
                        breakdown["cls"][(gnames[q], vnames[v])] = term.detach()
            loss_cls = torch.stack(cls_terms).mean() * cfg.lambda1
            loss_mim = torch.stack(mim_terms).mean() * cfg.lambda2

            # ---- channel self-relation (spec §3.5): no alignment, all pairs compared ----
            t_ch = F.softmax(t_channel / cfg.temperature_channel, dim=-1).chunk(2)
            s_ch = s_channel.chunk(2)
            l_ch = l_channel.chunk(n_local) if n_local else ()
            ch_terms = []
            for q in range(2):
                term = soft_cross_entropy(t_ch[q], s_ch[1 - q]).mean()
                ch_terms.append(term)
                breakdown["channel"][(gnames[q], gnames[1 - q])] = term.detach()
                for v in range(n_local):
                    term = soft_cross_entropy(t_ch[q], l_ch[v]).mean()
                    ch_terms.append(term)
                    breakdown["channel"][(gnames[q], lnames[v])] = term.detach()
            loss_channel = torch.stack(ch_terms).mean()

            # ---- spatial self-relation over overlap samples (spec §3.6, §3.7) ----
            grid1, grid2 = overlap_grids(gboxes[0], gboxes[1], cfg.overlap_size)
            amat = (
                bilinear_matrix(grid1.to(device), g_side),
                bilinear_matrix(grid2.to(device), g_side),
            )
            t_sp = t_spatial.chunk(2)
            s_sp = s_spatial.chunk(2)
            sp_terms = []
            for q in range(2):
                v = 1 - q
                target = F.softmax(align_relation(t_sp[q], amat[q]) / cfg.temperature_pixel, dim=-1)
                term = soft_cross_entropy(target, align_relation(s_sp[v], amat[v])).mean()
                sp_terms.append(term)
                breakdown["spatial"][(gnames[q], gnames[v])] = term.detach()
            if n_local:
                size = cfg.local_overlap_size or l_side
                l_sp = l_spatial.chunk(n_local)
                for q in range(2):
                    # Temperature before resampling, as the official (identical: resampling is linear).
                    t_scaled = t_sp[q] / cfg.temperature_pixel
                    for v in range(n_local):
                        grid_l, grid_g = overlap_grids(lboxes[v], gboxes[q], size)
                        target = F.softmax(
                            align_relation(t_scaled, bilinear_matrix(grid_g.to(device), g_side)),
                            dim=-1,
                        )
                        student = align_relation(
                            l_sp[v], bilinear_matrix(grid_l.to(device), l_side)
                        )
                        term = soft_cross_entropy(target, student).mean()
                        sp_terms.append(term)
                        breakdown["spatial"][(gnames[q], lnames[v])] = term.detach()
            loss_spatial = torch.stack(sp_terms).mean()

            ibot = loss_cls + loss_mim
            total = (
                (4.0 - cfg.alpha - cfg.beta) / 2.0 * ibot
                + cfg.alpha * loss_spatial
                + cfg.beta * loss_channel
            )
            acc = (t_cls[:bsz].argmax(-1) == s_cls[bsz:].argmax(-1)).float().mean()

        self._update_center(t_cls, t_patch)
        terms = {
            # Not divided by accum_iter: scaling micro-batch losses is the engine's job.
            "loss": total,
            "ibot": ibot.detach(),
            "cls": loss_cls.detach(),
            "patch": loss_mim.detach(),
            "spatial": loss_spatial.detach(),
            "channel": loss_channel.detach(),
            # torch.full fills on the device: no host-to-device copy per step
            "teacher_temp": torch.full((), temp, device=device),
            "teacher_patch_temp": torch.full((), temp2, device=device),
            "acc": acc.detach(),
        }
        return terms, breakdown

    @torch.no_grad()
    def _update_center(self, t_cls: Tensor, t_patch: Tensor) -> None:
        """EMA of the raw teacher logits, after the loss used the old centres (spec §3.4).

        Sums are all-reduced only when a process group exists (world size 1 otherwise, §8 #16).
        With ``accum_iter`` > 1 the sums of the micro-batches are pooled into one update.
        """
        cls_sum = t_cls.float().sum(0, keepdim=True)  # no copy: the forward passes fp32 logits
        patch_sum = t_patch.float().mean(1).sum(0, keepdim=True).unsqueeze(0)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(cls_sum)
            dist.all_reduce(patch_sum)
            world = dist.get_world_size()
        self.center_accum += cls_sum
        self.center2_accum += patch_sum
        self.accum_count += 1
        if int(self.accum_count) % self.config.accum_iter:
            return
        count = t_cls.shape[0] * world * self.config.accum_iter
        m = self.config.center_momentum
        self.center.copy_(self.center * m + self.center_accum / count * (1 - m))
        self.center2.copy_(self.center2 * m + self.center2_accum / count * (1 - m))
        self.center_accum.zero_()
        self.center2_accum.zero_()
        self.accum_count.zero_()

    # ---- optimisation hooks ---------------------------------------------------------------------

    def param_groups(self) -> list[dict[str, Any]]:
        """SERE's rule (spec §5.3, §8 #11), not iBOT's: biases and every parameter with more than
        one dimension are decayed (including tokens, mask token, ``weight_g``); only 1-D non-bias
        parameters (LayerNorm and BatchNorm weights) are exempt. Frozen parameters are left out."""
        decay, no_decay = [], []
        for name, p in self.student.named_parameters():
            if not p.requires_grad:
                continue
            if name.endswith(".bias") or p.ndim > 1:
                decay.append(p)
            else:
                no_decay.append(p)
        return [
            {"params": decay, "weight_decay": True, "name": "decay"},
            {"params": no_decay, "weight_decay": False, "name": "no_decay"},
        ]

    def after_backward(self, info: StepInfo) -> None:
        """Last-layer freeze: while ``epoch < freeze_last_layer`` the gradients of every parameter
        whose name contains ``last_layer`` become None, so AdamW skips them entirely, weight decay
        included; with a shared head this covers the patch projection too (spec §5.4 step 4, §8 #13)."""
        if info.epoch >= self.config.freeze_last_layer:
            return
        for name, p in self.student.named_parameters():
            if "last_layer" in name:
                p.grad = None

    def ema_pairs(self) -> list[tuple[str, Tensor, Tensor]]:
        """Teacher and student parameters paired over the names both branches have (the shared
        :meth:`Method.update_teacher` averages them). The name intersection skips the student's
        ``masked_embed`` (and a student-only ``last_layer2``); BN buffers are not averaged (spec
        §5.4 step 6, §8 #14)."""
        student = dict(self.student.named_parameters())
        return [(n, t, student[n]) for n, t in self.teacher.named_parameters() if n in student]

    def convert_sync_batchnorm(self) -> None:
        """SyncBatchNorm for every BN of both branches: the SERE heads' (spec §2.2, §8 #4) and, with
        ``norm_in_head="bn"``, the iBOT head's (the official script converts whole networks).

        Call before building the optimizer: the conversion creates new parameter tensors.
        """
        for branch in (self.student, self.teacher):
            for head_name in (*SERE_HEAD_NAMES, "head"):
                setattr(
                    branch,
                    head_name,
                    nn.SyncBatchNorm.convert_sync_batchnorm(getattr(branch, head_name)),
                )

    def export_backbone(self) -> nn.Module:
        """The teacher's timm ViT (num_classes 0): released SERE/iBOT/DINO weights are the teacher."""
        return self.teacher.backbone


# --------------------------------------------------------------------------------------------------
# Official full checkpoints
# --------------------------------------------------------------------------------------------------

_PARAMETRIZATION_ALIASES = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}


def _ours_to_official(key: str) -> str:
    if key.startswith("backbone.") or key.startswith("head."):
        return key
    return "backbone." + key  # masked_embed and the SERE heads live in the official backbone


def _official_to_ours(key: str) -> str:
    for alias, name in _PARAMETRIZATION_ALIASES.items():
        if key.endswith(alias):
            key = key[: -len(alias)] + name
    if key.startswith("head."):
        return key
    if key.startswith("backbone."):
        rest = key[len("backbone.") :]
        if rest == "masked_embed" or rest.split(".", 1)[0] in SERE_HEAD_NAMES:
            return rest
        return key
    raise KeyError(key)


def to_official_checkpoint(method: SereMethod) -> dict[str, Any]:
    """Full checkpoint in the official layout (spec §5.5): ``student`` / ``teacher`` with
    ``module.backbone.*`` and ``module.head.*`` keys (both ``last_layer`` and ``last_layer2``),
    ``ibot_loss`` with the centres, and ``args`` as an ``argparse.Namespace`` of the config."""

    def branch(net: SereNetwork) -> dict[str, Tensor]:
        return {
            "module." + _ours_to_official(k): v.detach().clone()
            for k, v in net.state_dict().items()
        }

    ibot = {
        name: getattr(method, name).detach().clone()
        for name in ("center", "center2", "center_accum", "center2_accum")
    }
    return {
        "student": branch(method.student),
        "teacher": branch(method.teacher),
        "ibot_loss": ibot,
        "args": argparse.Namespace(**method.config.to_dict()),
    }


def _load_branch(net: SereNetwork, state: Mapping[str, Tensor], part: str) -> None:
    converted: dict[str, Tensor] = {}
    for key, value in state.items():
        bare = key[len("module.") :] if key.startswith("module.") else key
        try:
            ours = _official_to_ours(bare)
        except KeyError:
            raise ValueError(
                f"{part}: unexpected key {key!r} (neither backbone.* nor head.*)"
            ) from None
        converted[ours] = value
    expected = net.state_dict()
    head = net.head
    if head.last_layer2 is head.last_layer:
        # Shared head: the two names are one module; they must agree, and either may be absent.
        for suffix in ("weight_g", "weight_v"):
            k1, k2 = f"head.last_layer.{suffix}", f"head.last_layer2.{suffix}"
            if (
                k1 in converted
                and k2 in converted
                and not torch.equal(converted[k1], converted[k2])
            ):
                raise ValueError(
                    f"{part}: shared head but {k1} and {k2} differ (file has an unshared head?)"
                )
            if k2 in converted and k1 not in converted:
                converted[k1] = converted[k2]
            if k1 in converted:
                converted[k2] = converted[k1]
    missing, unexpected, wrong = compare_keys(
        converted, {k: tuple(v.shape) for k, v in expected.items()}
    )
    problems = []
    if missing:
        problems.append(f"missing keys {[_ours_to_official(k) for k in sorted(missing)]}")
    if unexpected:
        problems.append(f"unexpected keys {[_ours_to_official(k) for k in sorted(unexpected)]}")
    for key in sorted(wrong):
        problems.append(
            f"shape of {_ours_to_official(key)}: file {tuple(converted[key].shape)}, "
            f"model {tuple(expected[key].shape)}"
        )
    if problems:
        raise ValueError(f"official checkpoint, {part}: " + "; ".join(problems))
    net.load_state_dict(converted, strict=True)


def load_official_checkpoint(
    method: SereMethod, ckpt: str | os.PathLike[str] | Mapping[str, Any]
) -> None:
    """Load an official SERE full training checkpoint (``checkpoint.pth``) into ``method``.

    Reads ``student`` and ``teacher`` (keys with or without ``module.``; ``weight_g``/``weight_v``
    or the parametrization names; ``last_layer2`` duplicates) and the centres from ``ibot_loss``.
    Strict: any missing, unexpected or mis-shaped tensor raises ``ValueError`` naming the keys.
    Files are read with ``torch.load(weights_only=True)``.
    """
    if not isinstance(ckpt, Mapping):
        from selfsup_zoo.convert import load_official  # weights_only; Namespace allow-listed

        ckpt = load_official(ckpt)
    for part in ("student", "teacher", "ibot_loss"):
        if part not in ckpt:
            raise ValueError(f"official checkpoint has no {part!r} entry (keys: {sorted(ckpt)})")
    _load_branch(method.student, ckpt["student"], "student")
    _load_branch(method.teacher, ckpt["teacher"], "teacher")
    centres = ckpt["ibot_loss"]
    known = {"center", "center2", "center_accum", "center2_accum"}
    unexpected = sorted(set(centres) - known)
    if unexpected or "center" not in centres or "center2" not in centres:
        raise ValueError(
            f"ibot_loss: expected center/center2 (+ accumulators), got {sorted(centres)}"
        )
    for name in sorted(known & set(centres)):
        buf = getattr(method, name)
        value = torch.as_tensor(centres[name])
        if value.numel() != buf.numel():
            raise ValueError(
                f"ibot_loss.{name}: file shape {tuple(value.shape)}, model {tuple(buf.shape)}"
            )
        buf.copy_(value.reshape(buf.shape))
    logger.info(
        "loaded official SERE checkpoint: student, teacher and centres (%d keys)",
        len(ckpt["student"]),
    )
