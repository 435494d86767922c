"""iBOT block and random patch masks."""

from __future__ import annotations

import random

import numpy as np
import torch

from selfsup_zoo.training.data.masking import block_mask, random_mask


def test_block_mask_properties() -> None:
    rng = random.Random(0)
    g = 14
    for ratio in (0.1, 0.2, 0.3, 0.4, 0.5):
        target = ratio * g * g
        counts = []
        for _ in range(60):
            mask = block_mask(rng, g, g, target)
            assert mask.shape == (g, g) and mask.dtype == torch.bool
            count = int(mask.sum())
            assert count <= target
            counts.append(count)
            # Each block has h < H and w < W, so no accepted block spans a whole row or column;
            # with at most 50 % masked, the full grid is never covered.
            assert count < g * g
        # The budget loop stops only when 10 attempts fail, so it gets close to T on average.
        assert np.mean(counts) >= 0.85 * target, (ratio, np.mean(counts))
    assert not block_mask(rng, g, g, 0.0).any()


def test_block_mask_single_block_matches_the_documented_draws() -> None:
    # Replay the draws of docs/methods/sere.md §4.1 for the first block: it lands where they say.
    for seed in range(20):
        rng = random.Random(seed)
        replay = random.Random(seed)
        target = 30.0
        mask = block_mask(rng, 14, 14, target)
        area = replay.uniform(16, target)
        aspect = np.exp(replay.uniform(np.log(0.3), np.log(1 / 0.3)))
        h, w = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if w < 14 and h < 14 and 0 < h * w <= target:
            top, left = replay.randint(0, 14 - h), replay.randint(0, 14 - w)
            assert mask[top : top + h, left : left + w].all()


def test_random_mask_exact_count() -> None:
    rng = random.Random(0)
    for target in (0.0, 0.9, 7.3, 58.8, 196.0):
        mask = random_mask(rng, 14, 14, target)
        assert mask.shape == (14, 14) and int(mask.sum()) == int(target)
