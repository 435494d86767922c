"""The colour pipeline of one view (jitter, grayscale, blur, solarize), on uint8 tensors.

Differences from the official PIL pipelines (CARE ``data/transforms.py``, SERE/iBOT
``DataAugmentationiBOT``):

* Gaussian blur: PIL's ``GaussianBlur(radius=sigma)`` picks its own support; torchvision needs a
  kernel size. We use an odd kernel of about 10 % of the output side (23 px at 224, BYOL's value),
  enlarged where needed to cover +-3 sigma_max (13 px for sigma_max = 2), so that small crops (96 px
  locals, smoke-test sizes) are not truncated at 2 sigma (:func:`blur_kernel_size`).
  sigma ~ U(0.1, 2.0) as officially.
* Colour jitter / grayscale: torchvision's tensor kernels (ITU-R 601 luma, hue through float HSV)
  instead of PIL's integer arithmetic; same parameters, same random order of the four jitter ops.
* Solarize: ``v2.functional.solarize(threshold=128)`` inverts values >= 128, exactly like
  ``PIL.ImageOps.solarize(threshold=128)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = ["Photometric", "blur_kernel_size", "view_pair"]


def blur_kernel_size(side: int, sigma_max: float = 2.0) -> int:
    """Odd Gaussian kernel size for an output of ``side`` pixels.

    About 10 % of the side (BYOL: 23 px at 224), but at least ``2*ceil(3*sigma_max)+1`` so that the
    kernel reaches +-3 sigma like PIL's blur, whose support is not tied to the image size.

    Args:
        side: Side of the (square) view in pixels.
        sigma_max: Largest blur sigma that will be drawn.

    Returns:
        The kernel size, an odd integer >= 3.
    """
    k = max(int(0.1 * side), 2 * math.ceil(3.0 * sigma_max) + 1, 3)
    return k if k % 2 == 1 else k + 1


def view_pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    """One probability per global view: a single number is used for both.

    Args:
        value: A probability, or a pair of them (view 1, view 2).
        name: The argument's name, for the error message.

    Returns:
        ``(p_view1, p_view2)``.
    """
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if len(value) != 2:
        raise ValueError(f"{name} needs one value per global view (2), got {value!r}")
    return float(value[0]), float(value[1])


class Photometric:
    """One view's colour pipeline; which generator each draw uses mirrors the official code.

    Jitter (applied with ``jitter_p``) and grayscale draw from torch's generator (torchvision's
    ``RandomApply``/``RandomGrayscale`` in the official code too); blur and solarize probabilities
    and sigma from the Python ``rng`` (the official ``GaussianBlur``/``Solarization`` classes use
    Python ``random``). Every op maps ``uint8[3, H, W]`` to ``uint8[3, H, W]``; the callers choose
    the order (CARE and SERE differ).

    Args:
        side: Side of the view in pixels (sets the default blur kernel).
        jitter: ColorJitter's ``(brightness, contrast, saturation, hue)``.
        jitter_p: Probability of applying the colour jitter.
        grayscale_p: Probability of converting to grayscale.
        blur_p: Probability of the Gaussian blur.
        solarize_p: Probability of solarizing.
        sigma: ``(low, high)`` range of the blur's sigma.
        blur_kernel: Odd blur kernel size; ``None`` for :func:`blur_kernel_size`.
    """

    def __init__(
        self,
        side: int,
        jitter: Sequence[float],
        jitter_p: float,
        grayscale_p: float,
        blur_p: float,
        solarize_p: float,
        sigma: Sequence[float],
        blur_kernel: int | None,
    ) -> None:
        b, c, s, h = jitter
        self.jitter = v2.RandomApply([v2.ColorJitter(b, c, s, h)], p=jitter_p)
        self.jitter_p = jitter_p
        self.gray = v2.RandomGrayscale(p=grayscale_p)
        self.grayscale_p = grayscale_p
        self.blur_p = blur_p
        self.solarize_p = solarize_p
        self.sigma = (float(sigma[0]), float(sigma[1]))
        self.kernel = (
            blur_kernel if blur_kernel is not None else blur_kernel_size(side, self.sigma[1])
        )
        if self.kernel % 2 != 1:
            raise ValueError(f"blur kernel size must be odd, got {self.kernel}")

    # Each op skips its transform object entirely at p == 0, so that a disabled op does not even
    # consume torch draws (keeps test configurations with photometrics off exact).
    def colour_jitter(self, img: torch.Tensor) -> torch.Tensor:
        """Colour jitter with probability ``jitter_p`` (torch's generator)."""
        return self.jitter(img) if self.jitter_p > 0 else img

    def grayscale(self, img: torch.Tensor) -> torch.Tensor:
        """Grayscale (kept 3-channel) with probability ``grayscale_p`` (torch's generator)."""
        return self.gray(img) if self.grayscale_p > 0 else img

    def colour(self, img: torch.Tensor) -> torch.Tensor:
        """Jitter then grayscale (the DINO/iBOT order; CARE puts the blur in between)."""
        return self.grayscale(self.colour_jitter(img))

    def blur(self, img: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """Gaussian blur with probability ``blur_p``, sigma ~ U(sigma) (both from ``rng``)."""
        if self.blur_p > 0 and rng.random() < self.blur_p:
            sigma = rng.uniform(*self.sigma)
            img = TF.gaussian_blur(img, [self.kernel, self.kernel], [sigma, sigma])
        return img

    def solarize(self, img: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """Solarize at threshold 128 with probability ``solarize_p`` (drawn from ``rng``)."""
        if self.solarize_p > 0 and rng.random() < self.solarize_p:
            img = TF.solarize(img, threshold=128)
        return img
