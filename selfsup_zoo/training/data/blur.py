"""Gaussian blur of uint8 images: torchvision's kernel as two banded matrix products.

PIL's ``GaussianBlur(radius=sigma)`` (the official pipelines) picks its own support; torchvision
needs a kernel size. We use an odd kernel of about 10 % of the output side (23 px at 224, BYOL's
value), enlarged where needed to cover +-3 sigma_max (13 px for sigma_max = 2), so that small crops
(96 px locals, smoke-test sizes) are not truncated at 2 sigma (:func:`blur_kernel_size`).

:func:`gaussian_blur_separable` runs the blur as two 1-D passes with torchvision's kernel, reflect
padding and rounding. Each pass cuts the padded rows into blocks of :data:`BLOCK` outputs and
multiplies each block's window (``BLOCK + kernel - 1`` inputs) by one ``[window, BLOCK]`` banded
matrix: one BLAS call per pass with ``kernel + BLOCK - 1`` multiply-adds per output instead of
``side`` (a dense ``[side, side]`` matrix, as before) or a 2-D ``kernel x kernel`` convolution
(torchvision). The float sums are ordered differently from torchvision's, so a uint8 pixel rounds
differently where its exact value lies within ~1e-5 of a half level: off by at most 1, on ~2 pixels
in 100,000 (tested: <= 1 level, < 1e-4 of pixels).
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["BLOCK", "blur_kernel_size", "gaussian_blur_separable"]

#: Outputs per banded block (224 and 96 are multiples of it, so no block is cropped there).
BLOCK = 32


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
def _band_index(size: int) -> torch.Tensor:
    """``[BLOCK, BLOCK + size - 1]`` tap numbers: output j takes tap i from input j + i.

    Entries outside the band point at ``size``, a zero appended to the kernel.
    """
    offset = torch.arange(BLOCK + size - 1)[None, :] - torch.arange(BLOCK)[:, None]
    return torch.where((offset >= 0) & (offset < size), offset, size)


@functools.lru_cache(maxsize=64)
def _edge_index(n: int, half: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source rows of the ``half`` rows before and the rows after ``n``, up to ``total`` rows.

    Reflect padding (the edge row not repeated); rows past the reflected ``half`` only feed
    outputs of the last block that are cropped, so any valid row will do there.
    """
    src = torch.arange(-half, total - half)
    src = torch.where(src < 0, -src, src)
    src = torch.where(src > n - 1, 2 * (n - 1) - src, src).clamp_(0, n - 1)
    return src[:half].contiguous(), src[half + n :].contiguous()


def _pass(x: torch.Tensor, band: torch.Tensor, dim: int) -> torch.Tensor:
    """One 1-D pass of ``x`` (``float32[C, H, W]``) along ``dim`` (1 or 2)."""
    block, window = band.shape
    half = (window - block) // 2
    n = x.shape[dim]
    blocks = -(-n // block)
    low, high = _edge_index(n, half, blocks * block + 2 * half)
    padded = torch.cat([x.index_select(dim, low), x, x.index_select(dim, high)], dim=dim)
    c, h, w = x.shape
    if dim == 1:
        # windows of whole rows overlap in memory: a strided view, one batched product
        windows = padded.as_strided((c, blocks, window, w), (padded.stride(0), block * w, w, 1))
        out = torch.matmul(band, windows).reshape(c, blocks * block, w)
        return out if blocks * block == n else out[:, :n]
    rows = padded.unfold(2, window, block).reshape(-1, window)
    out = (rows @ band.T).reshape(c, h, blocks * block)
    return out if blocks * block == n else out[..., :n]


def gaussian_blur_separable(img: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Gaussian blur as two banded 1-D passes (``TF.gaussian_blur``'s kernel).

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
    k = _kernel1d(kernel, sigma)
    band = torch.cat([k, k.new_zeros(1)])[_band_index(kernel)]
    x = img.to(torch.float32)
    x = _pass(_pass(x, band, 2), band, 1)
    return x if img.dtype.is_floating_point else x.round_().to(img.dtype)
