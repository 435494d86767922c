"""CARE's T-stream supervision term, checked against hand computations."""

from __future__ import annotations

import torch

from selfsup_zoo.training.losses.byol import byol_per_sample
from selfsup_zoo.training.losses.t_stream_supervision import TStreamSupervisionLoss


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    c_stream = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    t_stream = torch.tensor([[0.6, 0.8], [1.0, 0.0]], requires_grad=True)
    return c_stream, t_stream


def test_mean_squared_error_by_hand() -> None:
    c_stream, t_stream = _pair()
    loss = TStreamSupervisionLoss()(c_stream, t_stream)
    assert loss.shape == ()
    # squared differences: (0.4^2 + 0.8^2) + (1^2 + 1^2) = 0.8 + 2 = 2.8, over B * D = 4 elements
    torch.testing.assert_close(loss, torch.tensor(0.7))
    # for unit vectors: mean_b (2 - 2 cos) / D
    torch.testing.assert_close(loss, byol_per_sample(c_stream, t_stream).mean() / 2)


def test_gradient_reaches_only_the_c_stream() -> None:
    c_stream, t_stream = _pair()
    TStreamSupervisionLoss()(c_stream, t_stream).backward()
    assert t_stream.grad is None  # the T-stream output is a stop-gradient target
    # d/dc mean (c - t)^2 = 2 (c - t) / (B * D) = (c - t) / 2
    expected = torch.tensor([[0.2, -0.4], [-0.5, 0.5]])
    assert c_stream.grad is not None
    torch.testing.assert_close(c_stream.grad, expected)


def test_no_grad_inputs_give_a_constant() -> None:
    # the official teacher terms: computed from no-grad outputs, they carry no gradient
    c_stream, t_stream = (x.detach() for x in _pair())
    loss = TStreamSupervisionLoss()(c_stream, t_stream)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, torch.tensor(0.7))
