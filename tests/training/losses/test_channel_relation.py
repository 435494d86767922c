"""SERE channel self-relation and its loss, term by term on small tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup_zoo.training.losses.channel_relation import ChannelRelationLoss, channel_relation
from selfsup_zoo.training.losses.ibot import soft_cross_entropy


def test_channel_relation_is_the_spatial_mean_of_channel_products() -> None:
    fmap = torch.arange(1 * 2 * 2 * 2, dtype=torch.float32).reshape(1, 2, 2, 2)
    z = fmap.flatten(2)[0]  # [C=2, N=4]
    want = torch.tensor(
        [[(z[i] * z[j]).mean() for j in range(2)] for i in range(2)], dtype=torch.float32
    )
    torch.testing.assert_close(channel_relation(fmap)[0], want)


def test_channel_loss_terms() -> None:
    gen = torch.Generator().manual_seed(0)
    bsz, c, n_local, tau = 2, 3, 2, 0.1
    teacher = torch.randn(2 * bsz, c, c, generator=gen)
    student = torch.randn(2 * bsz, c, c, generator=gen)
    local = torch.randn(n_local * bsz, c, c, generator=gen)
    total, terms = ChannelRelationLoss(tau)(teacher, student, local)
    # Every pair compared (no overlap needed): other global view, then each local view.
    assert list(terms) == [(0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)]
    views = [student[:bsz], student[bsz:], local[:bsz], local[bsz:]]
    for (q, v), term in terms.items():
        target = F.softmax(teacher[q * bsz : (q + 1) * bsz] / tau, dim=-1)  # teacher: tau_c
        want = soft_cross_entropy(target, views[v]).mean()  # student: no temperature
        torch.testing.assert_close(term, want)
    torch.testing.assert_close(total, torch.stack(list(terms.values())).mean())


def test_channel_loss_without_local_views() -> None:
    _, terms = ChannelRelationLoss(0.1)(torch.randn(2, 2, 2), torch.randn(2, 2, 2), None)
    assert list(terms) == [(0, 1), (1, 0)]
