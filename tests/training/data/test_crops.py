"""Random-resized-crop boxes."""

from __future__ import annotations

import random

from selfsup_zoo.training.data.crops import sample_crop_box


def test_crop_box_fallback_and_range() -> None:
    # An impossible scale forces the centre-crop fallback with the aspect clamped into (3/4, 4/3).
    assert sample_crop_box(random.Random(0), 100, 400, scale=(2.0, 3.0)) == (133, 0, 133, 100)
    assert sample_crop_box(random.Random(0), 100, 110, scale=(2.0, 3.0)) == (0, 0, 110, 100)
    rng = random.Random(1)
    for _ in range(200):
        x0, y0, w, h = sample_crop_box(rng, 50, 70, scale=(0.05, 0.4))
        assert 0 <= x0 <= 70 - w and 0 <= y0 <= 50 - h and w > 0 and h > 0
        assert w * h <= 0.4 * 50 * 70 * 1.1  # rounding slack
