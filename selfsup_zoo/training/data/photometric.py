"""The colour pipeline of one view (jitter, grayscale, blur, solarize), on uint8 tensors.

Differences from the official PIL pipelines (CARE ``data/transforms.py``, SERE/iBOT
``DataAugmentationiBOT``):

* Gaussian blur: PIL's ``GaussianBlur(radius=sigma)`` picks its own support; torchvision needs a
  kernel size. We use an odd kernel of about 10 % of the output side (23 px at 224, BYOL's value),
  enlarged where needed to cover +-3 sigma_max (13 px for sigma_max = 2), so that small crops (96 px
  locals, smoke-test sizes) are not truncated at 2 sigma (:func:`blur_kernel_size`).
  sigma ~ U(0.1, 2.0) as officially.
  The blur runs as two 1-D passes, each a matrix product that folds in the reflect padding
  (:func:`gaussian_blur_separable`: BLAS instead of a 23 x 23 depthwise convolution, ~20x faster
  at 224 px), with torchvision's kernel, padding and rounding. The float sums are ordered
  differently, so a uint8 pixel rounds differently where its exact value lies within ~1e-5 of a
  half level: off by at most 1, on ~2 pixels in 100,000 (tested: <= 1 level, < 1e-4 of pixels).
* Colour jitter / grayscale: torchvision's tensor kernels (ITU-R 601 luma, hue through float HSV)
  instead of PIL's integer arithmetic; same parameters, same random order of the four jitter ops.
* Solarize: ``v2.functional.solarize(threshold=128)`` inverts values >= 128, exactly like
  ``PIL.ImageOps.solarize(threshold=128)``.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = ["Photometric", "blur_kernel_size", "gaussian_blur_separable", "view_pair"]


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


def _kernel1d(size: int, sigma: float) -> torch.Tensor:
    # torchvision's 1-D Gaussian: softmax of -(x / sigma)^2 over x in [-lim, lim], float32
    lim = (size - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=size, dtype=torch.float32)
    return torch.softmax(x.div(sigma).pow(2).neg(), dim=0)


@functools.lru_cache(maxsize=64)
def _taps(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of the ``size`` taps of each output pixel, reflect padding folded in."""
    half = size // 2
    src = torch.arange(n)[:, None] + torch.arange(-half, half + 1)[None, :]
    src = torch.where(src < 0, -src, src)
    src = torch.where(src > n - 1, 2 * (n - 1) - src, src)  # reflect (edge not repeated)
    return src.flatten(), torch.arange(n).repeat_interleave(size)


def _blur_matrix(n: int, k: torch.Tensor) -> torch.Tensor:
    """``[n, n]`` matrix of one 1-D pass (reflect padding and the kernel): ``out = x @ matrix``."""
    rows, cols = _taps(n, k.numel())
    matrix = torch.zeros(n, n)
    return matrix.index_put_((rows, cols), k.repeat(n), accumulate=True)


def gaussian_blur_separable(img: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Gaussian blur as two 1-D passes, each one matrix product (``TF.gaussian_blur``'s kernel).

    Same kernel, reflect padding and rounding as ``torchvision.transforms.v2.functional.
    gaussian_blur(img, [kernel, kernel], [sigma, sigma])``; the sums are ordered differently, so a
    uint8 pixel may differ by 1 where the exact value is within ~1e-5 of a half level.

    Args:
        img: ``uint8[C, H, W]`` (or float) image, ``H, W > kernel // 2``.
        kernel: Odd kernel size.
        sigma: Standard deviation in pixels.

    Returns:
        The blurred image, same shape and dtype.
    """
    dtype, (height, width) = img.dtype, img.shape[-2:]
    k = _kernel1d(kernel, sigma)
    x = img.to(torch.float32)
    x = x @ _blur_matrix(width, k)  # horizontal pass
    x = _blur_matrix(height, k).T @ x  # vertical pass
    return x if dtype.is_floating_point else x.round_().to(dtype)


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
            img = gaussian_blur_separable(img, self.kernel, sigma)
        return img

    def solarize(self, img: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """Solarize at threshold 128 with probability ``solarize_p`` (drawn from ``rng``)."""
        if self.solarize_p > 0 and rng.random() < self.solarize_p:
            img = TF.solarize(img, threshold=128)
        return img
