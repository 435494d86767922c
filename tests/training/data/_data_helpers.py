"""Small helpers shared by the data tests (fixtures are in conftest.py next to this file)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

# Small SERE configuration: 32 px globals on a 4x4 patch grid, three 16 px locals.
SMALL_SERE: dict[str, int] = dict(global_size=32, local_size=16, patch_size=8, local_crops=3)


def write_image(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    """Save ``array`` (``uint8[H, W]`` or ``[H, W, C]``) as an image file, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def apply_views(views: Any, img: torch.Tensor, seed: int, epoch: int = 0) -> dict:
    """Call a view transform the way the dataset does: both generators seeded from one number."""
    torch.manual_seed(seed)
    return views(img, random.Random(seed), epoch)


def noise(h: int, w: int, seed: int) -> np.ndarray:
    """A reproducible ``uint8[h, w, 3]`` noise image."""
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def same_sample(a: dict, b: dict) -> bool:
    """Whether two samples (or batches) have the same keys and equal values."""
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )
