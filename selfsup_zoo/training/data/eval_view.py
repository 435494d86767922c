"""The deterministic evaluation view (resize, centre crop) of the linear and k-NN protocols."""

from __future__ import annotations

import math
import random

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from selfsup_zoo.training.data.crops import interpolation_mode

__all__ = ["EvalView"]


class EvalView:
    """Deterministic evaluation view: resize the shorter side to ``floor(size / crop_pct)``, then
    centre-crop ``size`` (224/0.875 -> 256 -> 224, the standard linear/k-NN protocol).

    Args:
        size: Side of the centre crop.
        crop_pct: Fraction of the resized shorter side that the crop keeps, in (0, 1].
        interpolation: Resampling of the resize.

    Calling it with ``img: uint8[3, H, W]`` returns ``{"image": uint8[3, size, size]}``;
    :class:`~selfsup_zoo.training.data.dataset.ImageFolderDataset` adds ``"label"``.
    """

    def __init__(
        self,
        size: int = 224,
        crop_pct: float = 0.875,
        interpolation: str | InterpolationMode = "bilinear",
    ) -> None:
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        self.size = int(size)
        self.resize = int(math.floor(size / crop_pct))
        self.interpolation = interpolation_mode(interpolation)

    def __call__(
        self, img: torch.Tensor, rng: random.Random | None = None, epoch: int = 0
    ) -> dict[str, torch.Tensor]:
        """The evaluation view of ``img``; ``rng`` and ``epoch`` are unused (no randomness)."""
        out = TF.resize(img, [self.resize], interpolation=self.interpolation, antialias=True)
        out = TF.center_crop(out, [self.size, self.size])
        return {"image": out.contiguous()}
