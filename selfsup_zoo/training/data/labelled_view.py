"""The training view of a linear probe: one random-resized crop and a horizontal flip.

CARE's linear evaluation (``docs/methods/care.md`` §6) trains on ``RandomResizedCrop(224)`` (scale
0.08-1, bilinear) and ``RandomHorizontalFlip``; DINO/iBOT use the same. The crop box is drawn with
torchvision's algorithm from the sample's seeded RNG, so the view depends only on (seed, epoch,
index) and a resumed run sees the same crops.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from selfsup_zoo.training.data.crops import interpolation_mode, sample_crop_box

__all__ = ["LabelledCrop"]


class LabelledCrop:
    """``img: uint8[3, H, W]`` -> ``{"image": uint8[3, size, size]}`` (the data set adds the label).

    Args:
        size: side of the crop.
        scale: range of the crop's area as a fraction of the image's.
        interpolation: resampling of the resize.
        flip: flip horizontally with probability 1/2.
    """

    def __init__(
        self,
        size: int = 224,
        scale: Sequence[float] = (0.08, 1.0),
        interpolation: str | InterpolationMode = "bilinear",
        flip: bool = True,
    ) -> None:
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must be (low, high) in (0, 1], got {scale}")
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.interpolation = interpolation_mode(interpolation)
        self.flip = bool(flip)

    @property
    def output_size(self) -> int:
        """Side of the output crop."""
        return self.size

    def __call__(
        self, img: torch.Tensor, rng: random.Random, epoch: int
    ) -> dict[str, torch.Tensor]:
        """The view of ``img`` drawn from ``rng`` (``epoch`` unused)."""
        x0, y0, w, h = sample_crop_box(rng, img.shape[-2], img.shape[-1], self.scale)
        out = TF.resized_crop(
            img,
            y0,
            x0,
            h,
            w,
            [self.size, self.size],
            interpolation=self.interpolation,
            antialias=True,
        )
        if self.flip and rng.random() < 0.5:
            out = TF.horizontal_flip(out)
        return {"image": out.contiguous()}
