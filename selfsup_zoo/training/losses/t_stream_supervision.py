"""CARE's T-stream supervision: the C-stream's projection regresses onto the T-stream's.

CARE [1] runs a transformer stream (T-stream) on the CNN's layer3 features in parallel to the rest
of the CNN stream (C-stream) and, in the paper's words, uses the T-stream output to supervise
C-stream. For one network and one view, with ``c`` the L2-normalised C-stream projection
(``q`` / ``k`` in the official code) and ``t`` the T-stream one (``att_q`` / ``att_k``), both
``[B, D]``::

    L_sup(c, t) = MSE(c, sg(t)) = 1 / (B * D) * sum_b sum_d (c_bd - t_bd)^2
                = mean_b ||c_b - t_b||^2 / D = mean_b (2 - 2 <c_b, t_b>) / D

``sg`` is the stop-gradient: the T-stream's output is the fixed target, the gradient reaches only
the C-stream side. The official step adds four such terms (student and teacher, both views; the
teacher's are no-grad constants that only shift the logged value) and weights their sum by
``lambda_fea`` = 100 (official ``fea_loss``, ``docs/methods/care.md`` §3.4, §9 #2-#3). The BYOL
terms it is added to are in :mod:`selfsup_zoo.training.losses.byol` [2].

References:
    [1] Ge et al., "Revitalizing CNN Attentions via Transformers in Self-Supervised Visual
        Representation Learning" (CARE), NeurIPS 2021. https://arxiv.org/abs/2110.05340
    [2] Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
        NeurIPS 2020. https://arxiv.org/abs/2006.07733
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TStreamSupervisionLoss"]


class TStreamSupervisionLoss(nn.Module):
    """Mean squared error of the C-stream projection against the stop-gradient T-stream projection.

    One term per (network, view); no parameters, no state.
    """

    def forward(self, c_stream: torch.Tensor, t_stream: torch.Tensor) -> torch.Tensor:
        """Args:
            c_stream: C-stream projection, ``[B, D]`` (L2-normalised in CARE; not required).
            t_stream: T-stream projection of the same network and view, ``[B, D]``; detached here.

        Returns:
            The mean over all ``B * D`` elements of the squared difference, a 0-d tensor.
        """
        return F.mse_loss(c_stream, t_stream.detach())  # [B, D], [B, D] -> []
