"""The colour pipeline of one view (jitter, grayscale, blur, solarize), on uint8 tensors.

Differences from the official PIL pipelines (CARE ``data/transforms.py``, SERE/iBOT
``DataAugmentationiBOT``):

* Gaussian blur: torchvision's kernel (odd, about 10 % of the side, at least +-3 sigma_max) instead
  of PIL's radius-driven support; sigma ~ U(0.1, 2.0) as officially. It runs as two banded 1-D
  matrix products (:mod:`selfsup_zoo.training.data.blur`), equal to
  ``v2.functional.gaussian_blur`` but for rounding: <= 1 level on < 1e-4 of pixels.
* Colour jitter / grayscale: torchvision's tensor kernels on uint8 (ITU-R 601 luma, hue through
  float HSV) instead of PIL's integer arithmetic; same parameters, same random order of the four
  jitter ops. They run as :mod:`selfsup_zoo.training.data.colour_ops`, bit-equal to
  ``v2.functional.adjust_{brightness,contrast,saturation,hue}`` on uint8 (whole levels kept in
  float between the four ops, one conversion each way) and about 3x faster for the hue. With
  ``compile_hue`` the hue runs as one compiled kernel (:mod:`selfsup_zoo.training.data.
  compiled_hue`), bit-equal again and several times faster still.
* Solarize: inverts values >= 128, exactly like ``PIL.ImageOps.solarize(threshold=128)`` and
  ``v2.functional.solarize(threshold=128)`` (a bitwise xor on uint8).

Random draws are torchvision's own, in its order: ``RandomApply``'s ``torch.rand(1)``, then
``ColorJitter.make_params`` (a ``randperm(4)`` and four uniforms), then ``RandomGrayscale``'s
``torch.rand(1)``; only the kernels that apply the drawn parameters are ours.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from selfsup_zoo.training.data import colour_ops, compiled_hue
from selfsup_zoo.training.data.blur import blur_kernel_size, gaussian_blur_separable

__all__ = ["Photometric", "blur_kernel_size", "gaussian_blur_separable", "jitter", "view_pair"]


def jitter(
    img: torch.Tensor, params: dict[str, object], *, compile_hue: bool = False
) -> torch.Tensor:
    """Apply ``v2.ColorJitter.make_params``'s draw to a uint8 image (the ops in its order).

    Args:
        img: ``uint8[3, H, W]``.
        params: ``fn_idx`` (a permutation of 0..3: brightness, contrast, saturation, hue) and the
            four factors (``None`` for an op that is off).
        compile_hue: Use the compiled hue kernel (:mod:`~selfsup_zoo.training.data.compiled_hue`,
            bit-equal to the eager one).

    Returns:
        ``uint8[3, H, W]``, equal to ``v2.ColorJitter`` with these parameters.
    """
    hue = compiled_hue.adjust_hue if compile_hue else colour_ops.adjust_hue
    ops = (
        (colour_ops.adjust_brightness, params["brightness_factor"]),
        (colour_ops.adjust_contrast, params["contrast_factor"]),
        (colour_ops.adjust_saturation, params["saturation_factor"]),
        (hue, params["hue_factor"]),
    )
    order = params["fn_idx"]
    assert isinstance(order, torch.Tensor)
    x = img.to(torch.float32)
    for fn_id in order.tolist():
        op, factor = ops[fn_id]
        if factor is not None:
            assert isinstance(factor, float)
            x = op(x, factor)
    return x.to(img.dtype)


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
        compile_hue: Run the jitter's hue with the compiled kernel (same values, faster).
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
        compile_hue: bool = False,
    ) -> None:
        self.compile_hue = bool(compile_hue)
        b, c, s, h = jitter
        # only its parameter draw is used (make_params); the kernels are colour_ops'
        self.color_jitter = v2.ColorJitter(b, c, s, h)
        self.jitter_p = jitter_p
        self.grayscale_p = grayscale_p
        self.blur_p = blur_p
        self.solarize_p = solarize_p
        self.sigma = (float(sigma[0]), float(sigma[1]))
        self.kernel = (
            blur_kernel if blur_kernel is not None else blur_kernel_size(side, self.sigma[1])
        )
        if self.kernel % 2 != 1:
            raise ValueError(f"blur kernel size must be odd, got {self.kernel}")

    # Each op draws nothing at p == 0, so that a disabled op does not even consume torch draws
    # (keeps test configurations with photometrics off exact). At p > 0 the draws are those of
    # v2.RandomApply([v2.ColorJitter]) and v2.RandomGrayscale: torch.rand(1) >= p skips.
    def colour_jitter(self, img: torch.Tensor) -> torch.Tensor:
        """Colour jitter with probability ``jitter_p`` (torch's generator)."""
        if self.jitter_p <= 0 or torch.rand(1) >= self.jitter_p:
            return img
        params = self.color_jitter.make_params([img])
        return jitter(img, params, compile_hue=self.compile_hue)

    def grayscale(self, img: torch.Tensor) -> torch.Tensor:
        """Grayscale (kept 3-channel) with probability ``grayscale_p`` (torch's generator)."""
        if self.grayscale_p <= 0 or torch.rand(1) >= self.grayscale_p:
            return img
        gray: torch.Tensor = TF.rgb_to_grayscale(img, num_output_channels=3)
        return gray

    def warm_up(self) -> None:
        """Compile the hue kernel now where it is used (call before loader workers fork)."""
        if self.compile_hue and self.jitter_p > 0:
            compiled_hue.warm_up()

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
            img = colour_ops.solarize(img)
        return img
