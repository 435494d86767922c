"""Crop geometry shared by the view transforms: random-resized-crop boxes and resampling modes.

Resizing (done by the view classes with ``torchvision.transforms.v2.functional.resized_crop`` on
uint8 tensors) uses torchvision's antialiased bilinear/bicubic kernels, which emulate PIL's
resampling in the official pipelines (differences of about one grey level from rounding).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from torchvision.transforms import InterpolationMode

__all__ = ["IMAGENET_RATIO", "interpolation_mode", "sample_crop_box"]

#: Aspect-ratio range (w / h) of random resized crops, torchvision's and the official default.
IMAGENET_RATIO: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)


def sample_crop_box(
    rng: random.Random,
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float] = IMAGENET_RATIO,
) -> tuple[int, int, int, int]:
    """Random-resized-crop box in image pixels, torchvision's algorithm.

    Ten attempts of area fraction ~ U(scale) and log-aspect ~ U(log ratio); the first box that fits
    is placed uniformly. Otherwise the fallback is the largest centred box whose aspect is clamped
    into ``ratio``. Drawn from ``rng`` (Python ``random``, as SERE's overlap-aware crop) so that the
    box is known exactly for the overlap grids (docs/methods/sere.md §3.7).

    Args:
        rng: The sample's Python RNG.
        height: Height of the image in pixels.
        width: Width of the image in pixels.
        scale: ``(low, high)`` range of the crop's area as a fraction of the image's.
        ratio: ``(low, high)`` range of the crop's aspect ratio ``w / h``.

    Returns:
        ``(x0, y0, w, h)``: top-left corner and size, with ``0 <= x0 <= width - w`` and
        ``0 <= y0 <= height - h``.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y0 = rng.randint(0, height - h)
            x0 = rng.randint(0, width - w)
            return x0, y0, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def interpolation_mode(name: str | InterpolationMode) -> InterpolationMode:
    """The torchvision resampling mode a recipe names.

    Args:
        name: A mode name such as ``"bilinear"`` or ``"Bicubic"`` (case-insensitive), or a mode.

    Returns:
        The :class:`~torchvision.transforms.InterpolationMode`.
    """
    return name if isinstance(name, InterpolationMode) else InterpolationMode(name.lower())
