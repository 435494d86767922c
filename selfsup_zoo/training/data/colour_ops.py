"""torchvision's colour kernels on uint8 images, computed in float with fewer, cheaper ops.

Each function takes and returns a float32 ``[3, H, W]`` image holding whole grey levels (0.0 to
255.0): the exact float value of what the torchvision kernel returns on ``uint8``. Every op
truncates to a whole level where torchvision converts to ``uint8``, so a chain of them (the four
ColorJitter ops in their random order) needs one ``uint8 -> float`` conversion at the start and one
back at the end instead of one pair per op. The float arithmetic is torchvision 0.29's, op for op
(same operands, same order), so the results are bit-equal to ``torchvision.transforms.v2.
functional.adjust_{brightness,contrast,saturation,hue}``, ``rgb_to_grayscale`` and ``solarize`` on
``uint8`` (tests: random images, and every one of the 2^24 RGB colours for the hue).

The hue round trip (RGB -> HSV -> shifted hue -> RGB) is where the time goes: torchvision builds
``bool`` masks, an ``int64`` sector index and gathers from four stacked candidates. Here the masks
are float 0/1 computed from whole numbers (a product with 0 or 1 and a sum with 0 are exact), only
the interpolated channel of the sector (``q`` or ``t``) is computed, the maximum passes through, and
each output channel is ``mid + w_high (high - mid) - w_low (mid - low)`` with 0/1 weights: about 3x
faster at 224 px, one thread.
"""

from __future__ import annotations

import torch

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "grayscale",
    "luma",
    "solarize",
]

_LEVELS = 255.0
# torchvision's float -> uint8 scale (``to_dtype(..., scale=True)``): max + 1 - 1e-3, then truncate
_TO_LEVELS = _LEVELS + 1.0 - 1e-3
# below the smallest positive level (1/255) of an image scaled to [0, 1]
_TINY = 1e-6


def _levels(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 255] and truncate, in place (torchvision's ``clamp_`` then ``.to(uint8)``)."""
    return x.clamp_(0.0, _LEVELS).floor_()  # floor == trunc on >= 0, and faster


def luma(img: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma as torchvision computes it, in float (not truncated).

    Args:
        img: ``float32[3, H, W]`` of whole levels.

    Returns:
        ``float32[1, H, W]``.
    """
    r, g, b = img.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(dim=-3)


def _blend(img: torch.Tensor, other: torch.Tensor, ratio: float) -> torch.Tensor:
    return _levels(img.mul(ratio).add_(other, alpha=1.0 - ratio))


def adjust_brightness(img: torch.Tensor, factor: float) -> torch.Tensor:
    """``TF.adjust_brightness`` on uint8, on levels in float.

    Args:
        img: ``float32[3, H, W]`` of whole levels.
        factor: Brightness factor (>= 0).

    Returns:
        ``float32[3, H, W]`` of whole levels.
    """
    return _levels(img.mul(factor))


def adjust_contrast(img: torch.Tensor, factor: float) -> torch.Tensor:
    """``TF.adjust_contrast`` on uint8: blend with the mean of the truncated luma.

    Args:
        img: ``float32[3, H, W]`` of whole levels.
        factor: Contrast factor (>= 0).

    Returns:
        ``float32[3, H, W]`` of whole levels.
    """
    mean = torch.mean(luma(img).floor_(), dim=(-3, -2, -1), keepdim=True)
    return _blend(img, mean, factor)


def adjust_saturation(img: torch.Tensor, factor: float) -> torch.Tensor:
    """``TF.adjust_saturation`` on uint8: blend with the truncated luma.

    Args:
        img: ``float32[3, H, W]`` of whole levels.
        factor: Saturation factor (>= 0).

    Returns:
        ``float32[3, H, W]`` of whole levels.
    """
    return _blend(img, luma(img).floor_(), factor)


def grayscale(img: torch.Tensor) -> torch.Tensor:
    """``TF.rgb_to_grayscale(img, 3)`` on uint8 (truncated luma in all three channels).

    Args:
        img: ``float32[3, H, W]`` of whole levels.

    Returns:
        ``float32[3, H, W]`` of whole levels (three equal channels).
    """
    return luma(img).floor_().expand(img.shape).contiguous()  # luma >= 0: floor == trunc


def solarize(img: torch.Tensor) -> torch.Tensor:
    """``TF.solarize(img, threshold=128)`` on uint8 (works on uint8 and on float levels alike).

    Args:
        img: ``uint8[3, H, W]`` or ``float32[3, H, W]`` of whole levels.

    Returns:
        Same shape and dtype: levels >= 128 inverted (``255 - v``).
    """
    if img.dtype == torch.uint8:
        # v >= 128 is the top bit, and 255 - v is v ^ 0xFF: xor with 0xFF where the top bit is set
        top = img >> 7
        return img ^ (top * 0xFF)
    return torch.where(img >= 128.0, _LEVELS - img, img)


def adjust_hue(img: torch.Tensor, factor: float) -> torch.Tensor:
    """``TF.adjust_hue`` on uint8 (float HSV round trip), bit-equal, with fewer ops.

    Args:
        img: ``float32[3, H, W]`` of whole levels.
        factor: Hue shift in [-0.5, 0.5] (a fraction of the colour circle).

    Returns:
        ``float32[3, H, W]`` of whole levels.
    """
    # Masks are float 0/1 computed from whole numbers (float ops are several times faster than
    # comparisons to bool here); a product with a 0/1 mask and a sum with 0 are exact.
    x = img.mul(1.0 / _LEVELS)  # torchvision's uint8 -> float scaling
    r, g, b = x.unbind(dim=-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    span = maxc - torch.minimum(torch.minimum(r, g), b)
    # torchvision divides by 1 where max == min; the numerators are 0 there, so any positive
    # divisor gives the same 0 (and elsewhere both divisors are >= 1/255, left unchanged)
    s = span / maxc.clamp_min(_TINY)
    rc, gc, bc = ((maxc.unsqueeze(dim=-3) - x) / span.clamp_min(_TINY)).unbind(dim=-3)
    # the same comparisons on whole levels: 1 - (max - c) is 1 or <= 0
    top = torch.maximum(torch.maximum(img[0], img[1]), img[2])
    is_r = (1.0 - (top - img[0])).clamp_(min=0.0)
    is_g = (1.0 - (top - img[1])).clamp_(min=0.0).mul_(1.0 - is_r)
    is_b = 1.0 - is_r - is_g
    # torchvision's masked sum of the three sector formulas (one is selected, the others add 0)
    h = bc.sub(gc).mul_(is_r).add_(rc.add(2.0).sub_(bc).mul_(is_g))
    h = h.add_(gc.add(4.0).sub_(rc).mul_(is_b))
    # fmod(y, 1) for y in [5/6, 11/6] and remainder(z, 1) for z in [-1/2, 3/2): y - floor(y) is
    # the same float (an exact subtraction, or the same single rounding of z + 1 for z < 0)
    h = h.mul_(1.0 / 6.0).add_(1.0)
    h = h.sub_(torch.floor(h)).add_(factor)
    h = h.sub_(torch.floor(h))
    # back to RGB: sector i (0..6; 6 is sector 0 with f == 0) and fraction f of the shifted hue
    h6 = h.mul_(6)
    i = torch.floor(h6)
    f = h6.sub_(i)
    sxf = s * f
    one_minus_s = 1.0 - s
    # sectors 1, 3, 5 interpolate with q = 1 - s f, sectors 0, 2, 4 (and 6) with t = s f + 1 - s
    odd = i - torch.floor(i / 2.0).mul_(2.0)
    mid = (1.0 - sxf).mul_(odd).add_(sxf.add_(one_minus_s).mul_(1.0 - odd))
    mid = mid.mul_(maxc).clamp_(0.0, 1.0).mul_(_TO_LEVELS).floor_()
    low = one_minus_s.mul_(maxc).clamp_(0.0, 1.0).mul_(_TO_LEVELS).floor_()
    high = maxc.mul_(_TO_LEVELS).floor_()
    # (r, g, b) per sector: 0 (v, t, p), 1 (q, v, p), 2 (p, v, t), 3 (p, q, v), 4 (t, p, v),
    # 5 (v, p, q), 6 as 0. With 0/1 weights per channel, out = mid + w_high (high - mid)
    # - w_low (mid - low). For whole i, |2i - a| == 1 picks the pair {(a - 1) / 2, (a + 1) / 2}.
    two_i = i.mul_(2.0)
    high_g, high_b, low_r, low_g = (_pair(two_i, a) for a in (3.0, 7.0, 5.0, 9.0))
    high_r = 1.0 - high_g - high_b
    low_b = 1.0 - low_r - low_g
    up = high.sub_(mid)
    down = mid - low
    out = torch.empty_like(img)
    for c, (w_high, w_low) in enumerate(((high_r, low_r), (high_g, low_g), (high_b, low_b))):
        torch.addcmul(mid, w_high, up, out=out[c])
        out[c].addcmul_(w_low, down, value=-1.0)
    return out


def _pair(two_i: torch.Tensor, a: float) -> torch.Tensor:
    """1.0 where ``|two_i - a| == 1``, else 0.0 (``two_i`` even, ``a`` odd)."""
    return (two_i - a).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)
