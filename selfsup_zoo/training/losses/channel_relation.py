"""SERE's channel self-relation and its distillation loss.

Reference:
    [1] Li, Gao, Cheng, "SERE: Exploring Feature Self-relation for Self-supervised Transformers",
        TPAMI 2023. https://arxiv.org/abs/2206.05184

For a token map Z [C, s, s] (N = s^2 tokens, rows of Z flattened to [C, N]) the channel relation
is the C x C matrix of channel similarities [1]::

    R_c(Z) = (Z / sqrt(N)) (Z / sqrt(N))^T

The loss distils the teacher's relation of the projection z into the student's relation of the
predictor output p, row by row [1] (``docs/methods/sere.md`` §2.2, §3.5)::

    H(softmax(R_c(z_t) / tau_c), R_c(p_s)),   no temperature on the student

for each teacher global view q against the other global view and every local view: the
relation does not depend on positions, so every pair is compared, overlapping or not. Each term
is the mean over batch and C rows; the 2 (1 + L) terms are averaged with equal weight.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ibot import soft_cross_entropy


def channel_relation(fmap: Tensor) -> Tensor:
    """Channel self-relation of a token map, in float32.

    Normalised by the token count N = s^2 of the map; the official divides by a hard-coded 14 / 6
    chosen by crop count (§8 #6), which is the same for the recipes.

    Args:
        fmap: [B, C, s, s] token map.

    Returns:
        [B, C, C] = (Z / s)(Z / s)^T per image.
    """
    z = fmap.float().flatten(2) / math.sqrt(fmap.shape[-2] * fmap.shape[-1])  # [B, C, N]
    return z @ z.transpose(1, 2)  # [B, C, C]


class ChannelRelationLoss(nn.Module):
    """Channel self-relation distillation (see the module docstring).

    Args:
        temperature: tau_c of the teacher targets (``--temperature_channel``, 0.1).
    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self, teacher: Tensor, student_global: Tensor, student_local: Tensor | None
    ) -> tuple[Tensor, dict[tuple[int, int], Tensor]]:
        """Mean channel-relation loss and its terms.

        Args:
            teacher: [2B, C, C] relations of the teacher's projections z, global views.
            student_global: [2B, C, C] relations of the student's predictions p, global views.
            student_local: [L*B, C, C] the same for the local views (local heads), or None.

        Returns:
            (loss, terms): the scalar mean of the terms, and {(q, v): term} for teacher view q
            in {0, 1} and student view v (1 - q, then 2 + i for local i).
        """
        with torch.autocast(device_type=teacher.device.type, enabled=False):
            bsz = teacher.shape[0] // 2
            targets = F.softmax(teacher / self.temperature, dim=-1).chunk(2)  # 2 x [B, C, C]
            globals_ = student_global.chunk(2)
            locals_ = (
                student_local.chunk(student_local.shape[0] // bsz)
                if student_local is not None
                else ()
            )
            terms: dict[tuple[int, int], Tensor] = {}
            for q in range(2):
                # [B, C, C] -> [B, C] -> ()
                terms[(q, 1 - q)] = soft_cross_entropy(targets[q], globals_[1 - q]).mean()
                for i, local in enumerate(locals_):
                    terms[(q, 2 + i)] = soft_cross_entropy(targets[q], local).mean()
            return torch.stack(list(terms.values())).mean(), terms
