"""SERE spatial self-relation, its alignment and its loss, term by term on small tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup_zoo.training.losses.ibot import soft_cross_entropy
from selfsup_zoo.training.losses.spatial_relation import (
    OverlapSampling,
    SpatialRelationLoss,
    align_relation,
    spatial_relation,
)


def test_spatial_relation_per_channel_group() -> None:
    gen = torch.Generator().manual_seed(0)
    fmap = torch.randn(1, 4, 2, 2, generator=gen)  # C = 4, H = 2 groups of d = 2
    rel = spatial_relation(fmap, num_heads=2)
    assert rel.shape == (1, 2, 4, 4)
    z = fmap.flatten(2)[0]  # [C, N]
    for h in range(2):
        group = z[2 * h : 2 * h + 2]  # contiguous channels
        torch.testing.assert_close(rel[0, h], group.T @ group / math.sqrt(2))


def test_align_relation_is_a_r_a_transposed() -> None:
    gen = torch.Generator().manual_seed(1)
    rel = torch.randn(2, 3, 4, 4, generator=gen)
    eye = torch.eye(4).expand(2, 4, 4)
    torch.testing.assert_close(align_relation(rel, eye), rel)
    pick = torch.zeros(2, 1, 4)
    pick[:, 0, 2] = 1.0  # a lattice of one point on token 2
    torch.testing.assert_close(align_relation(rel, pick), rel[:, :, 2:3, 2:3])


def _sampling(bsz: int, n: int, n_local: int, local_n: int, points: int) -> OverlapSampling:
    gen = torch.Generator().manual_seed(2)
    return OverlapSampling(
        global_views=(
            torch.rand(bsz, points, n, generator=gen),
            torch.rand(bsz, points, n, generator=gen),
        ),
        local_pairs={
            (q, i): (
                torch.rand(bsz, 4, local_n, generator=gen),
                torch.rand(bsz, 4, n, generator=gen),
            )
            for q in range(2)
            for i in range(n_local)
        },
    )


def test_spatial_loss_terms() -> None:
    gen = torch.Generator().manual_seed(3)
    bsz, heads, n, local_n, n_local, tau = 2, 2, 9, 4, 1, 0.5
    teacher = torch.randn(2 * bsz, heads, n, n, generator=gen)
    student = torch.randn(2 * bsz, heads, n, n, generator=gen)
    local = torch.randn(n_local * bsz, heads, local_n, local_n, generator=gen)
    sampling = _sampling(bsz, n, n_local, local_n, points=5)
    total, terms = SpatialRelationLoss(tau)(teacher, student, local, sampling)
    assert list(terms) == [(0, 1), (1, 0), (0, 2), (1, 2)]  # global pairs first, then locals
    t = teacher.chunk(2)
    s = student.chunk(2)
    for q in range(2):
        a_t, a_s = sampling.global_views[q], sampling.global_views[1 - q]
        target = F.softmax(align_relation(t[q], a_t) / tau, dim=-1)  # over the overlap keys
        want = soft_cross_entropy(target, align_relation(s[1 - q], a_s)).mean()
        torch.testing.assert_close(terms[(q, 1 - q)], want)
        a_local, a_global = sampling.local_pairs[(q, 0)]
        target = F.softmax(align_relation(t[q], a_global) / tau, dim=-1)
        want = soft_cross_entropy(target, align_relation(local, a_local)).mean()
        torch.testing.assert_close(terms[(q, 2)], want)
    torch.testing.assert_close(total, torch.stack(list(terms.values())).mean())


def test_pairs_without_overlap_give_log_of_the_key_count() -> None:
    bsz, n, points = 1, 4, 9
    zeros = OverlapSampling((torch.zeros(bsz, points, n), torch.zeros(bsz, points, n)), {})
    rel = torch.randn(2 * bsz, 1, n, n)
    total, terms = SpatialRelationLoss(0.5)(rel, torch.randn(2 * bsz, 1, n, n), None, zeros)
    assert list(terms) == [(0, 1), (1, 0)]
    assert float(total) == pytest.approx(math.log(points))  # uniform target, constant student
