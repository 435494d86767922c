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

One repair: RandAugment's ``PosterizeIncreasing`` keeps ``4 - int(level / 10 * 4)`` bits, so at
magnitude 10 (reached by ``mstd0.5`` draws about 2 % of the time) it asks ``PIL.ImageOps.posterize``
for 0 bits. Pillow up to 10 returned an all-black image for that; Pillow 11+ raises "bits must be
between or equal to 1 and 8", which ended a fine-tuning run within its first steps. The view gives
timm's posterize ops the earlier behaviour (:func:`posterize_any_bits`), nothing else changes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from timm.data import create_transform
from timm.data.auto_augment import RandAugment
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from selfsup_zoo.training.data.crops import interpolation_mode

__all__ = ["TimmTrainView", "posterize_any_bits"]

_POSTERIZE_OPS = ("Posterize", "PosterizeIncreasing", "PosterizeOriginal")


def posterize_any_bits(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize op, also for 0 bits: keep the ``bits_to_keep`` most significant bits of
    each channel (0 bits: every value 0, what Pillow before 11 returned; 8 or more: unchanged)."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _repair_posterize(transform: Any) -> int:
    """Point every RandAugment posterize op inside ``transform`` (a timm ``Compose``) at
    :func:`posterize_any_bits`; returns how many ops were changed."""
    changed = 0
    for t in getattr(transform, "transforms", []):
        if isinstance(t, RandAugment):
            for op in t.ops:
                if op.name in _POSTERIZE_OPS:
                    op.aug_fn = posterize_any_bits
                    changed += 1
        else:
            changed += _repair_posterize(t)
    return changed


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
        _repair_posterize(self.transform)

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
