"""Schedules and clipping against hand-computed values (docs/methods/care.md §3.6, §5.1, §9 #20;
docs/methods/sere.md §5.2)."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup_zoo.training.optim import (
    build_optimizer,
    clip_gradients,
    cosine_schedule,
    lr_schedule,
    momentum_schedule,
    warmcos_schedule,
    wd_schedule,
)
from selfsup_zoo.training.recipe import OptimConfig


def test_care_warmcos_matches_the_official_update_rule():
    # ImageNet numbers: T = 1251 x 100, W = 12,510, peak 0.2, optimizer created at 1e-6.
    T, W, peak = 125_100, 12_510, 0.2
    lr = warmcos_schedule(peak, T, W, 1e-6)
    assert len(lr) == T
    assert lr[0] == 1e-6  # iteration 1 (step 0) uses the creation lr
    assert lr[1] == pytest.approx(
        (0.2 - 1e-6) * 1 / 12_510 + 1e-6, rel=1e-12
    )  # set after iteration 1
    assert lr[6_255] == pytest.approx((0.2 - 1e-6) * 0.5 + 1e-6, rel=1e-12)
    assert lr[W] == pytest.approx(0.2, rel=1e-12)  # end of warm-up: the peak
    assert lr[W + 1] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi / 112_590)), rel=1e-12)
    mid = W + 112_590 // 2
    assert lr[mid] == pytest.approx(0.1, rel=1e-9)
    assert lr[-1] == pytest.approx(
        0.2 * 0.5 * (1 + math.cos(math.pi * 112_589 / 112_590)), rel=1e-9
    )
    assert lr[-1] < 1e-10


def test_sere_cosine_scheduler_matches_spec_figures():
    T, W = 125_100, 12_510
    lr = cosine_schedule(2e-3, 1e-6, T, W, 0.0)
    assert len(lr) == T
    assert lr[0] == 0.0
    assert lr[1] == pytest.approx(2e-3 / 12_509, rel=1e-12)  # 1.599e-7 in docs/methods/sere.md §5.2
    assert lr[1] == pytest.approx(1.599e-7, rel=1e-3)
    assert lr[12_509] == pytest.approx(2e-3, rel=1e-12)  # linspace includes both ends
    assert lr[12_510] == pytest.approx(2e-3, rel=1e-12)  # cosine starts at the base again
    assert lr[-1] == pytest.approx(1.0000004e-6, rel=1e-6)


def test_weight_decay_cosine_from_004_to_04():
    cfg = OptimConfig(weight_decay=0.04, weight_decay_end=0.4)
    wd = wd_schedule(cfg, 100)
    assert wd[0] == pytest.approx(0.04)
    assert wd[50] == pytest.approx(0.22)  # halfway: mean of the two ends
    assert wd[99] == pytest.approx(0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * 99 / 100)))
    const = wd_schedule(OptimConfig(weight_decay=1e-4), 10)
    assert (const == 1e-4).all()


def test_momentum_schedule_and_index_offsets():
    K = 125_100
    m = momentum_schedule(0.99, K)
    assert len(m) == K + 1
    assert m[0] == pytest.approx(0.99)
    assert m[K // 2] == pytest.approx(0.995, abs=1e-9)
    assert m[K] == 1.0
    # CARE: after step k the teacher gets m(k+1) = 1 - 0.01 (cos(pi (k+1)/K) + 1)/2.
    k = 7
    assert m[k + 1] == pytest.approx(1 - 0.01 * (math.cos(math.pi * 8 / K) + 1) / 2, rel=1e-15)
    # SERE: 0.996 -> 1, m[k] after step k.
    s = momentum_schedule(0.996, 100)
    assert s[1] == pytest.approx(1 - 0.004 * (math.cos(math.pi / 100) + 1) / 2, rel=1e-15)


def test_lr_schedule_from_recipe_peak_per_256_images():
    cfg = OptimConfig(base_lr=0.05, lr_schedule="warmcos", warmup_epochs=10, warmup_start_lr=1e-6)
    lr = lr_schedule(cfg, 1024, 1251 * 100, 1251)
    assert lr.max() == pytest.approx(0.2)
    assert int(lr.argmax()) == 12_510


def test_per_parameter_clipping_scales_each_tensor_separately():
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 4.0])  # norm 5 -> scaled to 0.3
    b.grad = torch.tensor([0.1, 0.0])  # norm 0.1 < 0.3 -> untouched
    clip_gradients([a, b], 0.3, "per_param")
    assert a.grad.norm().item() == pytest.approx(0.3 * 5 / (5 + 1e-6), rel=1e-6)
    assert torch.equal(b.grad, torch.tensor([0.1, 0.0]))


def test_global_clipping_and_none():
    a = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 4.0])
    assert clip_gradients([a], 1.0, "none") is None
    assert torch.equal(a.grad, torch.tensor([3.0, 4.0]))
    norm = clip_gradients([a], 1.0, "global")
    assert norm == pytest.approx(5.0)
    assert a.grad.norm().item() == pytest.approx(1.0, rel=1e-5)


def test_optimizer_groups_keep_weight_decay_flags():
    w = torch.nn.Parameter(torch.ones(3, 3))
    g = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer(
        [
            {"params": [w], "weight_decay": True, "name": "decay"},
            {"params": [g], "weight_decay": False},
        ],
        OptimConfig(name="adamw", weight_decay=0.04),
        torch.device("cpu"),
    )
    assert isinstance(opt, torch.optim.AdamW)
    assert [grp["apply_wd"] for grp in opt.param_groups] == [True, False]
    assert [grp["weight_decay"] for grp in opt.param_groups] == [0.04, 0.0]
