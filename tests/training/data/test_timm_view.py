"""The fine-tuning view runs timm's RandAugment at every magnitude, posterize at 0 bits included."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import auto_augment

from selfsup_zoo.training.data.timm_view import TimmTrainView, posterize_any_bits


def test_posterize_keeps_the_top_bits_and_zero_bits_is_black():
    img = Image.fromarray(
        np.arange(256, dtype=np.uint8).reshape(16, 16).repeat(3).reshape(16, 16, 3)
    )
    assert np.array_equal(np.asarray(posterize_any_bits(img, 8)), np.asarray(img))
    two = np.asarray(posterize_any_bits(img, 2))
    assert np.array_equal(two, np.asarray(img) & 0b11000000)
    black = posterize_any_bits(img, 0)
    assert black.mode == "RGB" and black.size == img.size and not np.asarray(black).any()


def test_magnitude_10_randaugment_runs_where_timms_posterize_would_fail():
    img = Image.new("RGB", (8, 8), (200, 100, 50))
    try:
        auto_augment.posterize(img, 0)  # what PosterizeIncreasing asks for at magnitude 10
    except ValueError as err:
        assert "bits" in str(err)  # Pillow 11+: the failure this view repairs
    # mstd0: magnitude exactly 10 every time, so each posterize draw asks for 0 bits.
    view = TimmTrainView(32, auto_augment="rand-m10-n3-mstd0-inc1", re_prob=0.0)
    ops = [op.name for t in view.transform.transforms if hasattr(t, "ops") for op in t.ops]
    assert "PosterizeIncreasing" in ops
    rng = random.Random(0)
    for i in range(60):
        torch.manual_seed(i)
        out = view(torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8), rng, 0)["image"]
        assert out.shape == (3, 32, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("bits", [1, 3, 7])
def test_posterize_equals_pillows_where_pillow_accepts_the_bits(bits):
    from PIL import ImageOps

    img = Image.fromarray(np.random.RandomState(bits).randint(0, 256, (9, 9, 3), dtype=np.uint8))
    assert np.array_equal(
        np.asarray(posterize_any_bits(img, bits)), np.asarray(ImageOps.posterize(img, bits))
    )
