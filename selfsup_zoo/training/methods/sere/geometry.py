"""Crop geometry of SERE: overlap lattices, bilinear sampling matrices, position embeddings.

Section numbers (§) refer to ``docs/methods/sere.md``. A crop is a [5] row (x0, y0, w, h, flip) in
original-image pixels, as the views of ``selfsup_zoo.training.data`` record it (§3.7).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup_zoo.training.losses.spatial_relation import OverlapSampling


def overlap_grids(boxes_a: Tensor, boxes_b: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Sampling grids of the overlap of two crops of the same images (§3.7).

    Both grids sample the same ``size x size`` lattice of image points (both ends of the overlap
    included), each in its own crop's frame. Flipped crops mirror x. Pairs without overlap get -2
    everywhere (every sample falls outside the map, §3.7 consequence 1).

    Args:
        boxes_a: [B, 5] rows (x0, y0, w, h, flip) in original-image pixels.
        boxes_b: [B, 5] the other crop of the same images.
        size: S, lattice points per axis (>= 2).

    Returns:
        Two float32 [B, S, S, 2] grids in ``grid_sample`` coordinates (x = column, y = row, in
        [-1, 1]), on the device of ``boxes_a``.
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
    """Bilinear sampling weights of a grid as a matrix.

    Row p = i*S + j holds the weights with which ``F.grid_sample(mode="bilinear",
    align_corners=False, padding_mode="zeros")`` reads grid point (i, j) from a ``size x size`` map
    flattened row-major. Neighbours outside the map are dropped, so rows on the map border sum to
    0.5 (0.25 in corners): the official edge attenuation (§3.7 consequence 2).

    Args:
        grid: [B, S, S, 2] points in ``grid_sample`` coordinates.
        size: side of the sampled map.

    Returns:
        [B, S*S, size*size] float32 weights.
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


def interpolate_pos_embed_official(pos_embed: Tensor, grid_hw: tuple[int, int]) -> Tensor:
    """DINO/iBOT position-embedding interpolation (§1.1, §1.6, §8 #10).

    The patch part is resized bicubically with the *scale factor* (g + 0.1) / sqrt(N0) per axis
    (align_corners False, no antialias) -- not by target size as timm does; the two give different
    values, and only this one reproduces the official losses on 96 px crops. (The official code
    pairs the width factor with the height axis; that only matters for non-square inputs, which
    SERE never trains on, so each axis gets its own factor.)

    Args:
        pos_embed: [1, 1 + N0, C], CLS slot first, N0 a square.
        grid_hw: (h, w) token grid of the input.

    Returns:
        [1, 1 + h*w, C]; ``pos_embed`` itself when the grid is square with N0 tokens.
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


def overlap_sampling(
    global_boxes: Tensor,
    local_boxes: Tensor | None,
    global_side: int,
    local_side: int,
    overlap_size: int,
    local_overlap_size: int | None,
    device: torch.device,
) -> OverlapSampling:
    """The bilinear sampling matrices of every crop pair the spatial loss compares (§3.6, §3.7).

    Args:
        global_boxes: [2, B, 5] boxes of the two global crops.
        local_boxes: [L, B, 5] boxes of the local crops, or None.
        global_side: side of the global token maps (14 for 224 px at patch 16).
        local_side: side of the local token maps (6 for 96 px at patch 16).
        overlap_size: S of the global-global lattice (13).
        local_overlap_size: S of the local-global lattices; None = ``local_side`` (the official
            hard-coded 6, §3.6).
        device: where the matrices go.

    Returns:
        The matrices: global-global [B, S^2, global_side^2] per view, and per (teacher view q,
        local view i) [B, S'^2, local_side^2] and [B, S'^2, global_side^2].
    """
    grid1, grid2 = overlap_grids(global_boxes[0], global_boxes[1], overlap_size)
    global_views = (
        bilinear_matrix(grid1.to(device), global_side),
        bilinear_matrix(grid2.to(device), global_side),
    )
    local_pairs: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
    if local_boxes is not None:
        size = local_overlap_size or local_side
        for q in range(2):
            for i in range(local_boxes.shape[0]):
                grid_l, grid_g = overlap_grids(local_boxes[i], global_boxes[q], size)
                local_pairs[(q, i)] = (
                    bilinear_matrix(grid_l.to(device), local_side),
                    bilinear_matrix(grid_g.to(device), global_side),
                )
    return OverlapSampling(global_views, local_pairs)
