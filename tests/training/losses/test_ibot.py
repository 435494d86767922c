"""iBOT CLS and masked-patch losses, term by term on small tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup_zoo.training.collectives import Collectives
from selfsup_zoo.training.losses.ibot import IBOTClsLoss, IBOTPatchLoss, soft_cross_entropy


def _h(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy written out: -sum_k P[k] log softmax(s)[k]."""
    return -(target * torch.log(torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True))).sum(
        -1
    )


def test_soft_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(0)
    target = F.softmax(torch.randn(3, 5, generator=gen), dim=-1)
    logits = torch.randn(3, 5, generator=gen)
    torch.testing.assert_close(soft_cross_entropy(target, logits), _h(target, logits))
    uniform = torch.full((1, 4), 0.25)
    assert float(soft_cross_entropy(uniform, torch.zeros(1, 4))) == pytest.approx(math.log(4))


def test_cls_loss_terms() -> None:
    gen = torch.Generator().manual_seed(1)
    bsz, k, temp = 2, 6, 0.05
    teacher = torch.randn(2 * bsz, k, generator=gen)
    student = torch.randn(2 * bsz, k, generator=gen)
    local = torch.randn(1 * bsz, k, generator=gen)
    loss = IBOTClsLoss(k, student_temp=0.1, center_momentum=0.9, accum_iter=1)
    loss.center.value.copy_(torch.randn(1, k, generator=gen))
    total, terms = loss(teacher, student, local, teacher_temp=temp)
    assert list(terms) == [(0, 1), (0, 2), (1, 0), (1, 2)]  # v != q; 2 (1 + L) terms
    target = F.softmax((teacher - loss.center.value) / temp, dim=-1)  # centred, sharpened
    views = [student[:bsz], student[bsz:], local]
    for (q, v), term in terms.items():
        want = _h(target[q * bsz : (q + 1) * bsz], views[v] / 0.1).mean()
        torch.testing.assert_close(term, want)
    torch.testing.assert_close(total, torch.stack(list(terms.values())).mean())


def test_cls_loss_without_local_views() -> None:
    loss = IBOTClsLoss(4, 0.1, 0.9, 1)
    _, terms = loss(torch.randn(2, 4), torch.randn(2, 4), None, 0.04)
    assert list(terms) == [(0, 1), (1, 0)]


def test_cls_centre_moves_after_the_loss_with_the_raw_logits() -> None:
    loss = IBOTClsLoss(3, 0.1, center_momentum=0.9, accum_iter=1)
    teacher = torch.tensor([[1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])
    loss.update_center(teacher, Collectives())
    torch.testing.assert_close(loss.center.value, 0.1 * teacher.mean(0, keepdim=True))


def test_patch_loss_per_image_over_masked_tokens() -> None:
    gen = torch.Generator().manual_seed(2)
    bsz, side, k, temp = 2, 2, 5, 0.07
    n = side * side
    teacher = torch.randn(2 * bsz, n, k, generator=gen)
    student = torch.randn(2 * bsz, n, k, generator=gen)
    masks = torch.zeros(2 * bsz, side, side, dtype=torch.bool)
    masks[0, 0, :] = True  # view 1, image 0: tokens 0 and 1
    masks[3, 1, 1] = True  # view 2, image 1: token 3; images 1 (view 1) and 0 (view 2) unmasked
    loss = IBOTPatchLoss(k, student_temp=0.1, center_momentum=0.9, accum_iter=1)
    total, per_image = loss(teacher, student, masks, teacher_temp=temp)
    per_token = _h(F.softmax(teacher / temp, dim=-1), student / 0.1)  # [2B, N]
    want = torch.stack(
        [
            per_token[0, :2].mean(),
            torch.tensor(0.0),  # unmasked: 0, and still counted in the batch mean
            torch.tensor(0.0),
            per_token[3, 3],
        ]
    )
    torch.testing.assert_close(torch.cat(per_image), want)
    torch.testing.assert_close(total, (want[:2].mean() + want[2:].mean()) / 2)


def test_patch_loss_without_masks_is_zero() -> None:
    loss = IBOTPatchLoss(3, 0.1, 0.9, 1)
    total, per_image = loss(torch.randn(4, 2, 3), torch.randn(4, 2, 3), None, 0.04)
    assert float(total) == 0.0 and all(torch.all(p == 0) for p in per_image)


def test_patch_centre_is_the_mean_over_all_tokens() -> None:
    loss = IBOTPatchLoss(2, 0.1, center_momentum=0.5, accum_iter=1)
    teacher = torch.tensor([[[1.0, 2.0], [3.0, 6.0]], [[5.0, 2.0], [7.0, 6.0]]])  # [2, N=2, K=2]
    loss.update_center(teacher, Collectives())
    assert loss.center.value.shape == (1, 1, 2)
    torch.testing.assert_close(loss.center.value, torch.tensor([[[2.0, 2.0]]]))
