"""The BYOL term (``selfsup_zoo.training.losses.byol``), checked against hand computations."""

from __future__ import annotations

import pytest
import torch

from selfsup_zoo.training.losses.byol import BYOLLoss, byol_per_sample


def test_byol_per_sample_by_hand() -> None:
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
    z = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    # orthogonal, equal, opposite, cos 0.6: 2 - 2 cos = 2, 0, 4, 0.8
    torch.testing.assert_close(byol_per_sample(p, z), torch.tensor([2.0, 0.0, 4.0, 0.8]))
    # 2 - 2cos == squared distance of unit vectors
    torch.testing.assert_close(byol_per_sample(p, z), (p - z).pow(2).sum(-1))


def _two_pairs() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    p1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    z1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p2 = torch.tensor([[0.6, 0.8], [0.6, 0.8]], requires_grad=True)
    z2 = torch.tensor([[0.8, 0.6], [-0.6, -0.8]])
    return [p1, p2], [z1, z2]


def test_byol_loss_sums_the_batch_means_of_the_pairs() -> None:
    predictions, targets = _two_pairs()
    # pair 1: 2 - 2 * (1, 0) = (0, 2), mean 1;  pair 2: 2 - 2 * (0.96, -1) = (0.08, 4), mean 2.04
    loss = BYOLLoss()(predictions, targets)
    assert loss.shape == ()
    torch.testing.assert_close(loss, torch.tensor(3.04))
    # same operations in the same order as the sum written out
    by_hand = (
        byol_per_sample(predictions[0], targets[0]).mean()
        + byol_per_sample(predictions[1], targets[1]).mean()
    )
    assert torch.equal(loss, by_hand)


def test_byol_loss_gradient_by_hand() -> None:
    predictions, targets = _two_pairs()
    BYOLLoss()(predictions, targets).backward()
    # d/dp mean_b (2 - 2 <p_b, z_b>) = -2 z / B, with B = 2
    for p, z in zip(predictions, targets, strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, -z)


def test_byol_loss_one_pair_and_bad_pairs() -> None:
    predictions, targets = _two_pairs()
    torch.testing.assert_close(BYOLLoss()(predictions[:1], targets[:1]), torch.tensor(1.0))
    with pytest.raises(ValueError, match="one target per prediction"):
        BYOLLoss()(predictions, targets[:1])
    with pytest.raises(ValueError, match="one target per prediction"):
        BYOLLoss()([], [])
