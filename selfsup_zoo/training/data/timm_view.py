"""The training view of fine-tuning: timm's own ``create_transform`` (RandAugment, random erasing).

SERE fine-tunes with the MAE code base, whose training transform is timm's
``create_transform(is_training=True, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25,
re_mode="pixel", re_count=1, interpolation="bicubic")``. This view runs exactly that transform on
the decoded image. timm's transforms draw from Python's global ``random``, numpy's global generator
(RandAugment's choice of operations) and torch's global generator; the view seeds the first two from
the sample's RNG for the duration of the call (and puts the caller's states back), the data set has
already seeded the third, so a sample's view depends
only on (seed, epoch, index) as for every other view.

The output is already normalised float32 (random erasing works on normalised pixels), which the
engine passes to the device unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from timm.data import create_transform
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from selfsup_zoo.training.data.crops import interpolation_mode

__all__ = ["TimmTrainView"]


class TimmTrainView:
    """``img: uint8[3, H, W]`` -> ``{"image": float32[3, size, size]}`` normalised.

    Args:
        size: output side.
        auto_augment: timm's auto-augment string (``""`` = none).
        re_prob: random-erasing probability.
        re_mode: random-erasing fill (``"pixel"``: per-pixel normal noise, MAE's).
        re_count: erased boxes per image.
        interpolation: resampling.
        mean: normalisation mean (0..1 scale).
        std: normalisation standard deviation.
        color_jitter: colour-jitter strength, ``None`` for none (MAE passes none with RandAugment).
    """

    def __init__(
        self,
        size: int = 224,
        auto_augment: str = "rand-m9-mstd0.5-inc1",
        re_prob: float = 0.25,
        re_mode: str = "pixel",
        re_count: int = 1,
        interpolation: str = "bicubic",
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        color_jitter: float | None = None,
    ) -> None:
        self.size = int(size)
        self.interpolation: InterpolationMode = interpolation_mode(interpolation)
        self.settings: dict[str, Any] = {
            "auto_augment": auto_augment or None,
            "re_prob": float(re_prob),
            "re_mode": re_mode,
            "re_count": int(re_count),
            "interpolation": self.interpolation.value,
            "mean": tuple(mean),
            "std": tuple(std),
            "color_jitter": color_jitter,
        }
        self.transform = create_transform(self.size, is_training=True, **self.settings)

    @property
    def output_size(self) -> int:
        """Side of the output image."""
        return self.size

    def __call__(
        self, img: torch.Tensor, rng: random.Random, epoch: int
    ) -> dict[str, torch.Tensor]:
        """timm's training transform of ``img``, seeded by ``rng`` (``epoch`` unused)."""
        saved, saved_np = random.getstate(), np.random.get_state()
        random.seed(rng.getrandbits(64))
        np.random.seed(rng.getrandbits(32))
        try:
            out = self.transform(TF.to_pil_image(img))
        finally:
            random.setstate(saved)
            np.random.set_state(saved_np)
        assert isinstance(out, torch.Tensor)  # create_transform ends with ToTensor + Normalize
        return {"image": out.contiguous()}
