"""The BYOL regression loss between an online prediction and a target projection.

BYOL [1] trains an online network to predict, from one view, the target network's projection of
another view. With both vectors L2-normalised, the loss of one sample is their squared distance::

    l(p, z) = || p - z ||^2 = 2 - 2 <p, z>          (in [0, 4] for unit vectors)

and the loss of a step is symmetrised over the two view pairs (view 1 predicts view 2's target and
view 2 predicts view 1's), each pair averaged over the batch::

    L = mean_b l(p1_b, z1_b) + mean_b l(p2_b, z2_b)   (in [0, 8], a sum, not an average)

CARE [2] uses this loss twice, once per stream: its C-stream term (official ``con_loss``) on the
ResNet's heads and its T-stream term (``con2_loss``) on the transformer's heads
(``docs/methods/care.md`` §3.4, §9 #3).

References:
    [1] Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
        NeurIPS 2020. https://arxiv.org/abs/2006.07733
    [2] Ge et al., "Revitalizing CNN Attentions via Transformers in Self-Supervised Visual
        Representation Learning" (CARE), NeurIPS 2021. https://arxiv.org/abs/2110.05340
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["byol_per_sample", "BYOLLoss"]


def byol_per_sample(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``2 - 2 <p, z>`` per sample, i.e. ``||p - z||^2`` for L2-normalised ``p`` and ``z``.

    The inputs are not normalised here: CARE's encoders already return unit vectors (in fp32).

    Args:
        p: online predictions, ``[B, D]``, L2-normalised over ``D``.
        z: target projections, ``[B, D]``, L2-normalised over ``D`` (no gradient needed).

    Returns:
        ``[B]``, each in ``[0, 4]``.
    """
    return 2.0 - 2.0 * (p * z).sum(dim=-1)  # [B, D] -> [B]


class BYOLLoss(nn.Module):
    """Symmetrised BYOL loss: the sum over view pairs of the batch mean of :func:`byol_per_sample`.

    Pair ``i`` is (``predictions[i]``, ``targets[i]``); for the usual two views, ``predictions``
    holds the online outputs of views 1 and 2 and ``targets`` the target outputs of views 2 and 1.
    The pairs are added in order (``pair 0 + pair 1 + ...``). No parameters, no state.
    """

    def forward(
        self, predictions: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Args:
            predictions: one ``[B, D]`` L2-normalised online prediction per view pair.
            targets: one ``[B, D]`` L2-normalised target projection per view pair.

        Returns:
            The loss, a 0-d tensor, in ``[0, 4 * len(predictions)]``.

        Raises:
            ValueError: no pairs, or not as many targets as predictions.
        """
        if not predictions or len(predictions) != len(targets):
            raise ValueError(
                f"BYOLLoss needs one target per prediction, got {len(predictions)} predictions "
                f"and {len(targets)} targets"
            )
        pairs = zip(predictions, targets, strict=True)
        terms = [byol_per_sample(p, z).mean() for p, z in pairs]  # [B] -> [] per pair
        loss = terms[0]
        for term in terms[1:]:
            loss = loss + term
        return loss
