"""SERE's multi-crop views: recorded boxes and the masking-ratio schedule."""

from __future__ import annotations

import random

import pytest
import torch
from _data_helpers import noise

from selfsup_zoo.training.data.sere_views import SereViews


def test_sere_boxes_match_crops() -> None:
    height, width = 180, 240
    img = torch.zeros(3, height, width, dtype=torch.uint8)
    img[0] = torch.arange(width, dtype=torch.uint8)[None, :]  # red encodes x
    img[1] = torch.arange(height, dtype=torch.uint8)[:, None]  # green encodes y
    plain = dict(
        jitter_p=0.0,
        grayscale_p=0.0,
        global_blur_p=(0.0, 0.0),
        local_blur_p=0.0,
        global_solarize_p=(0.0, 0.0),
    )
    views = SereViews(global_size=32, local_size=16, patch_size=8, local_crops=6, **plain)
    flips = set()
    for seed in range(6):
        out = views(img, random.Random(seed), 0)
        crops = list(out["global_crops"]) + list(out["local_crops"])
        boxes = torch.cat([out["global_boxes"], out["local_boxes"]]).tolist()
        for crop, (x0, y0, w, h, flip) in zip(crops, boxes, strict=True):
            assert 0 <= x0 and x0 + w <= width and 0 <= y0 and y0 + h <= height
            side = crop.shape[-1]
            cols = crop[0].double().mean(0)  # red per output column
            rows = crop[1].double().mean(1)  # green per output row
            if flip:
                cols = cols.flip(0)
            flips.add(flip)
            # Output pixel j samples the source at x0 + (j + 0.5) * w / side - 0.5.
            step_x, step_y = w / side, h / side
            tol_x, tol_y = 0.5 * step_x + 1.5, 0.5 * step_y + 1.5
            assert abs(cols[0].item() - (x0 + 0.5 * step_x - 0.5)) <= tol_x
            assert abs(cols[-1].item() - (x0 + w - 0.5 * step_x - 0.5)) <= tol_x
            assert abs(rows[0].item() - (y0 + 0.5 * step_y - 0.5)) <= tol_y
            assert abs(rows[-1].item() - (y0 + h - 0.5 * step_y - 0.5)) <= tol_y
            assert abs(cols.mean().item() - (x0 + w / 2 - 0.5)) <= 1.0
    assert flips == {0.0, 1.0}


def test_sere_mask_ratio_schedule() -> None:
    views = SereViews(
        global_size=56, local_size=16, patch_size=4, local_crops=0, pred_start_epoch=2
    )
    rng = random.Random(0)
    ratios = [views.mask_ratio(rng, epoch=5) for _ in range(2000)]
    zeros = sum(r == 0 for r in ratios)
    assert 850 < zeros < 1150  # half the candidates are the (0, 0) pair
    assert all(0.1 <= r <= 0.5 for r in ratios if r != 0)
    img = torch.from_numpy(noise(64, 64, 5)).permute(2, 0, 1).contiguous()
    early = [views(img, random.Random(s), 1)["masks"] for s in range(10)]
    assert not any(m.any() for m in early)  # before pred_start_epoch
    late = torch.stack([views(img, random.Random(s), 2)["masks"] for s in range(20)])
    assert late.any() and late.shape == (20, 2, 14, 14)
    assert (late.flatten(2).sum(-1) <= 0.5 * 196).all()
    rand = SereViews(
        global_size=56,
        local_size=16,
        patch_size=4,
        local_crops=0,
        pred_ratio=0.25,
        pred_ratio_var=0.0,
        pred_shape="rand",
    )
    assert (rand(img, random.Random(0), 0)["masks"].flatten(1).sum(-1) == 49).all()
    with pytest.raises(ValueError, match="multiple of patch_size"):
        SereViews(global_size=30, patch_size=16)
