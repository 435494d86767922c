"""CARE's views: BYOL's asymmetric two-view augmentation (docs/methods/care.md §4.1)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from selfsup_zoo.training.data.crops import IMAGENET_RATIO, interpolation_mode, sample_crop_box
from selfsup_zoo.training.data.photometric import Photometric, view_pair

__all__ = ["CareViews"]


class CareViews:
    """BYOL's asymmetric two-view augmentation as used by CARE (docs/methods/care.md §4.1).

    Per view, in the official order: random resized crop (``scale``, aspect (3/4, 4/3), bilinear,
    antialiased) -> ColorJitter(0.4, 0.4, 0.2, 0.1) with p 0.8 -> Gaussian blur (p 1.0 / 0.1,
    sigma ~ U(0.1, 2)) -> grayscale p 0.2 -> horizontal flip p 0.5 -> solarize (threshold 128,
    p 0.0 / 0.2). The crop box and flip are drawn from the Python RNG (the official code uses
    torch's through torchvision; only the stream differs, not the distribution).

    Args:
        size: Side of both (square) views.
        scale: Area range of the random resized crop.
        ratio: Aspect range of the random resized crop.
        jitter: ColorJitter's ``(brightness, contrast, saturation, hue)``.
        jitter_p: Probability of the colour jitter.
        grayscale_p: Probability of grayscale.
        blur_p: Blur probability, one for both views or ``(view 1, view 2)``.
        solarize_p: Solarize probability, one for both views or ``(view 1, view 2)``.
        flip_p: Probability of the horizontal flip.
        sigma: Range of the blur's sigma.
        blur_kernel: Odd blur kernel size; ``None`` for about 10 % of ``size``.
        interpolation: Resampling of the crop (``"bilinear"`` officially).
        compile_hue: Run the colour jitter's hue with the compiled kernel: the same views, about
            1.7 times the images per second per worker (docs/training.md §8.2).

    Calling it with ``(img: uint8[3, H, W], rng, epoch)`` returns
    ``{"x1": uint8[3, S, S], "x2": uint8[3, S, S]}`` with ``S = size``.
    """

    def __init__(
        self,
        size: int = 224,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = IMAGENET_RATIO,
        *,
        jitter: Sequence[float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: float | Sequence[float] = (1.0, 0.1),
        solarize_p: float | Sequence[float] = (0.0, 0.2),
        flip_p: float = 0.5,
        sigma: Sequence[float] = (0.1, 2.0),
        blur_kernel: int | None = None,
        interpolation: str | InterpolationMode = "bilinear",
        compile_hue: bool = False,
    ) -> None:
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.flip_p = float(flip_p)
        self.interpolation = interpolation_mode(interpolation)
        blur = view_pair(blur_p, "blur_p")
        sol = view_pair(solarize_p, "solarize_p")
        self.views = [
            Photometric(
                self.size,
                jitter,
                jitter_p,
                grayscale_p,
                blur[v],
                sol[v],
                sigma,
                blur_kernel,
                compile_hue,
            )
            for v in range(2)
        ]

    def warm_up(self) -> None:
        """Compile what ``compile_hue`` asks for now (the loader calls it before workers fork)."""
        for photo in self.views:
            photo.warm_up()

    def _view(self, img: torch.Tensor, rng: random.Random, photo: Photometric) -> torch.Tensor:
        height, width = img.shape[-2:]
        x0, y0, w, h = sample_crop_box(rng, height, width, self.scale, self.ratio)
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
        # CARE's order (docs/methods/care.md §4.1): jitter -> blur -> grayscale -> flip ->
        # solarize. The flip after the colour ops differs from BYOL's order only in rounding (the
        # ops commute).
        out = photo.grayscale(photo.blur(photo.colour_jitter(out), rng))
        if rng.random() < self.flip_p:
            out = TF.horizontal_flip(out)
        return photo.solarize(out, rng).contiguous()

    @property
    def output_size(self) -> int:
        """Side of the (square) views the backbone trains on."""
        return self.size

    def __call__(
        self, img: torch.Tensor, rng: random.Random, epoch: int = 0
    ) -> dict[str, torch.Tensor]:
        """The two views of ``img`` (``uint8[3, H, W]``); ``epoch`` is unused."""
        return {
            "x1": self._view(img, rng, self.views[0]),
            "x2": self._view(img, rng, self.views[1]),
        }
