"""Patch masks for iBOT's masked image modelling (docs/methods/sere.md §4.1); True = masked."""

from __future__ import annotations

import math
import random

import numpy as np
import torch

__all__ = ["block_mask", "random_mask"]


def block_mask(
    rng: random.Random,
    height: int,
    width: int,
    target: float,
    *,
    min_aspect: float = 0.3,
) -> torch.Tensor:
    """BEiT/iBOT block masking on a ``height x width`` patch grid (docs/methods/sere.md §4.1).

    Repeatedly adds a rectangle of area ~ U(min_area, budget) and log-uniform aspect in
    (min_aspect, 1/min_aspect), where ``budget = target - count`` and
    ``min_area = (min(h, w) // 3) ** 2``. A rectangle is accepted only if it adds between 1 and
    ``budget`` new patches; after 10 failed attempts masking stops, so the count may fall short of
    ``target`` but never exceeds it.

    Args:
        rng: The sample's Python RNG.
        height: Rows of the patch grid.
        width: Columns of the patch grid.
        target: Number of patches to mask (a float: ratio times grid size).
        min_aspect: Smallest aspect ratio of a block (the largest is its inverse).

    Returns:
        ``bool[height, width]``, True where a patch is masked.
    """
    mask = np.zeros((height, width), dtype=bool)
    count = 0
    min_area = (min(height, width) // 3) ** 2
    log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
    while count < target:
        budget = target - count
        added = 0
        for _ in range(10):
            # random.uniform accepts a > b, so a budget below min_area draws from [budget, min_area]
            # exactly as the official code does.
            area = rng.uniform(min_area, budget)
            aspect = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if w < width and h < height:
                top = rng.randint(0, height - h)
                left = rng.randint(0, width - w)
                box = mask[top : top + h, left : left + w]
                new = h * w - int(box.sum())
                if 0 < new <= budget:
                    box[...] = True
                    added = new
            if added > 0:
                break
        if added == 0:
            break
        count += added
    return torch.from_numpy(mask)


def random_mask(rng: random.Random, height: int, width: int, target: float) -> torch.Tensor:
    """Exactly ``floor(target)`` masked positions chosen uniformly (iBOT ``pred_shape='rand'``).

    Drawn with the sample's Python RNG instead of numpy's global generator (official), so the mask
    is reproducible per sample.

    Args:
        rng: The sample's Python RNG.
        height: Rows of the patch grid.
        width: Columns of the patch grid.
        target: Number of patches to mask; its integer part is used.

    Returns:
        ``bool[height, width]`` with exactly ``int(target)`` True entries.
    """
    flat = torch.zeros(height * width, dtype=torch.bool)
    k = int(target)
    if k > 0:
        flat[rng.sample(range(height * width), k)] = True
    return flat.view(height, width)
