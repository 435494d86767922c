"""CARE's two views."""

from __future__ import annotations

import random

import torch
from _data_helpers import apply_views, noise
from torchvision.transforms.v2 import functional as TF

# The helper's name from when the data package was one module; it must still resolve there.
from selfsup_zoo.training.data import _interp
from selfsup_zoo.training.data.care_views import CareViews
from selfsup_zoo.training.data.crops import sample_crop_box


def test_care_view_ops_run_in_the_official_order() -> None:
    """docs/methods/care.md §4.1: crop -> jitter -> blur -> grayscale -> flip -> solarize.

    Replayed by hand with jitter and solarize off and blur, grayscale, flip always on: pixel-equal
    to the views, and not to the order with grayscale before the blur (they differ by rounding on
    this noise image)."""
    img = torch.from_numpy(noise(40, 50, 1)).permute(2, 0, 1).contiguous()
    views = CareViews(
        size=24,
        scale=(0.3, 1.0),
        jitter_p=0.0,
        grayscale_p=1.0,
        blur_p=1.0,
        solarize_p=0.0,
        flip_p=1.0,
        sigma=(1.0, 2.0),
    )
    out = apply_views(views, img, seed=3)
    rng = random.Random(3)
    kernel = views.views[0].kernel
    for key in ("x1", "x2"):
        x0, y0, w, h = sample_crop_box(rng, 40, 50, (0.3, 1.0), views.ratio)
        crop = TF.resized_crop(
            img, y0, x0, h, w, [24, 24], interpolation=_interp("bilinear"), antialias=True
        )
        assert rng.random() < 1.0
        sigma = rng.uniform(1.0, 2.0)
        official = TF.rgb_to_grayscale(TF.gaussian_blur(crop, [kernel, kernel], [sigma, sigma]), 3)
        other = TF.gaussian_blur(TF.rgb_to_grayscale(crop, 3), [kernel, kernel], [sigma, sigma])
        assert rng.random() < 1.0  # the flip
        assert torch.equal(out[key], TF.horizontal_flip(official))
        assert not torch.equal(out[key], TF.horizontal_flip(other))
