"""Batching of the views: shapes, dtypes and view-first stacking."""

from __future__ import annotations

import random

import torch
from _data_helpers import SMALL_SERE, apply_views, noise

from selfsup_zoo.training.data.care_views import CareViews
from selfsup_zoo.training.data.collate import collate_views
from selfsup_zoo.training.data.sere_views import SereViews


def test_care_views_shapes_and_collate() -> None:
    img = torch.from_numpy(noise(40, 50, 0)).permute(2, 0, 1).contiguous()
    views = CareViews(size=24)
    out = views(img, random.Random(0), 0)
    assert set(out) == {"x1", "x2"}
    for key in ("x1", "x2"):
        assert out[key].shape == (3, 24, 24) and out[key].dtype == torch.uint8
    samples = [dict(apply_views(views, img, i), label=i % 2, num_replaced=i % 2) for i in range(5)]
    batch = collate_views(samples)
    assert batch["x1"].shape == (5, 3, 24, 24) and batch["x2"].dtype == torch.uint8
    assert batch["label"].tolist() == [0, 1, 0, 1, 0] and batch["label"].dtype == torch.int64
    assert batch["num_replaced"] == 2


def test_sere_views_shapes_and_collate() -> None:
    img = torch.from_numpy(noise(60, 45, 1)).permute(2, 0, 1).contiguous()
    views = SereViews(**SMALL_SERE)
    out = views(img, random.Random(0), 0)
    assert out["global_crops"].shape == (2, 3, 32, 32) and out["global_crops"].dtype == torch.uint8
    assert out["local_crops"].shape == (3, 3, 16, 16) and out["local_crops"].dtype == torch.uint8
    assert out["masks"].shape == (2, 4, 4) and out["masks"].dtype == torch.bool
    assert out["global_boxes"].shape == (2, 5) and out["global_boxes"].dtype == torch.float64
    assert out["local_boxes"].shape == (3, 5) and out["local_boxes"].dtype == torch.float64
    batch = collate_views(
        [dict(apply_views(views, img, i), label=7, num_replaced=0) for i in range(4)]
    )
    assert batch["global_crops"].shape == (2, 4, 3, 32, 32)
    assert batch["local_crops"].shape == (3, 4, 3, 16, 16)
    assert batch["masks"].shape == (2, 4, 4, 4)
    assert batch["global_boxes"].shape == (2, 4, 5) and batch["local_boxes"].shape == (3, 4, 5)
    assert batch["global_crops"].is_contiguous()
    # View-first stacking: batch[key][v][b] is sample b's view v.
    again = apply_views(views, img, 2)
    assert torch.equal(batch["local_crops"][1, 2], again["local_crops"][1])
    assert torch.equal(batch["masks"][0, 2], again["masks"][0])

    no_locals = SereViews(**{**SMALL_SERE, "local_crops": 0})(img, random.Random(0), 0)
    assert no_locals["local_crops"].shape == (0, 3, 16, 16) and no_locals["local_boxes"].shape == (
        0,
        5,
    )
    assert collate_views([no_locals, no_locals])["local_crops"].shape == (0, 2, 3, 16, 16)
