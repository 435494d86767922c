"""SERE's spatial self-relation and its distillation loss over the overlap of two crops.

Reference:
    [1] Li, Gao, Cheng, "SERE: Exploring Feature Self-relation for Self-supervised Transformers",
        TPAMI 2023. https://arxiv.org/abs/2206.05184

For a token map Z [C, s, s] split into H contiguous channel groups of d = C / H, the spatial
relation of group h is the N x N matrix of token similarities (N = s^2) [1]::

    R_s(Z)_h = Z_h^T Z_h / sqrt(d)      (row = query position, column = key position)

Two crops see different image regions, so both relations are first resampled on an S x S lattice
of points of their overlap: with A the [S^2, N] bilinear sampling matrix of a crop's lattice,
the aligned relation is A R A^T (``docs/methods/sere.md`` §3.6, equal to the official two
``grid_sample`` passes). The loss [1] is::

    H(softmax(A_t R(z_t) A_t^T / tau_s), A_s R(p_s) A_s^T),   no temperature on the student

over the S^2 overlap keys: teacher global view q against the other global view (S = 13) and
every local view (S = the local map side, teacher relation divided by tau_s before resampling as
the official does; the same since resampling is linear). Each term is the mean over batch, heads
and queries; the 2 + 2L terms are averaged with equal weight. Pairs without overlap sample zeros
and give ln S^2 (§3.7 consequence 1); they still count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ibot import soft_cross_entropy


def spatial_relation(fmap: Tensor, num_heads: int) -> Tensor:
    """Spatial self-relation per contiguous channel group, in float32 (§2.2).

    Args:
        fmap: [B, C, s, s] token map.
        num_heads: H; C must be divisible by it (group width d = C / H).

    Returns:
        [B, H, N, N] with N = s^2, scaled by d^-0.5. Row = query position, column = key.
    """
    b, c = fmap.shape[:2]
    d = c // num_heads
    scale: float = d**-0.5
    z = fmap.float().reshape(b, num_heads, d, -1)  # [B, H, d, N]
    return (z.transpose(-1, -2) @ z) * scale  # [B, H, N, N]


def align_relation(relation: Tensor, matrix: Tensor) -> Tensor:
    """Resample a relation on both axes, A R A^T per image and head (§3.6), in float32.

    Args:
        relation: [B, H, N, N].
        matrix: [B, P, N] bilinear sampling weights (P lattice points).

    Returns:
        [B, H, P, P]; equal to the official two ``grid_sample`` passes (key axis, then query).
    """
    a = matrix.float()[:, None]  # [B, 1, P, N]
    return a @ relation.float() @ a.transpose(-1, -2)


@dataclass(frozen=True)
class OverlapSampling:
    """Bilinear sampling matrices of the crop overlaps of one batch.

    Attributes:
        global_views: (A1, A2), each [B, S^2, N]: the global-global lattice in view 1's and in
            view 2's token map.
        local_pairs: {(q, i): (A_local, A_global)} for teacher global view q and local view i:
            the lattice of their overlap in the local map [B, S'^2, n] and in the global map
            [B, S'^2, N]. Empty without local views.
    """

    global_views: tuple[Tensor, Tensor]
    local_pairs: dict[tuple[int, int], tuple[Tensor, Tensor]]


class SpatialRelationLoss(nn.Module):
    """Spatial self-relation distillation over crop overlaps (see the module docstring).

    Args:
        temperature: tau_s of the teacher targets (``--temperature_pixel``, 0.5).
    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self,
        teacher: Tensor,
        student_global: Tensor,
        student_local: Tensor | None,
        sampling: OverlapSampling,
    ) -> tuple[Tensor, dict[tuple[int, int], Tensor]]:
        """Mean spatial-relation loss and its terms.

        Args:
            teacher: [2B, H, N, N] relations of the teacher's projections z, global views.
            student_global: [2B, H, N, N] relations of the student's predictions p.
            student_local: [L*B, H, n, n] the same for the local views (local heads), or None.
            sampling: the overlap lattices of this batch.

        Returns:
            (loss, terms): the scalar mean of the terms, and {(q, v): term} for teacher view q
            in {0, 1} and student view v (1 - q, then 2 + i for local i).
        """
        with torch.autocast(device_type=teacher.device.type, enabled=False):
            bsz = teacher.shape[0] // 2
            teachers = teacher.chunk(2)  # 2 x [B, H, N, N]
            students = student_global.chunk(2)
            terms: dict[tuple[int, int], Tensor] = {}
            for q in range(2):
                v = 1 - q
                # [B, H, N, N] -> [B, H, S^2, S^2]
                target = align_relation(teachers[q], sampling.global_views[q]) / self.temperature
                student = align_relation(students[v], sampling.global_views[v])
                # softmax over the S^2 keys; [B, H, S^2] -> ()
                terms[(q, v)] = soft_cross_entropy(F.softmax(target, dim=-1), student).mean()
            if student_local is not None:
                locals_ = student_local.chunk(student_local.shape[0] // bsz)  # L x [B, H, n, n]
                for q in range(2):
                    # Temperature before resampling, as the official (same: resampling is linear).
                    scaled = teachers[q] / self.temperature
                    for i, local in enumerate(locals_):
                        a_local, a_global = sampling.local_pairs[(q, i)]
                        target = F.softmax(align_relation(scaled, a_global), dim=-1)
                        student = align_relation(local, a_local)  # [B, H, S'^2, S'^2]
                        terms[(q, 2 + i)] = soft_cross_entropy(target, student).mean()
            return torch.stack(list(terms.values())).mean(), terms
