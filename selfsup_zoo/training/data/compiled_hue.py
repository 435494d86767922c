"""The hue kernel of the colour jitter, compiled by ``torch.compile`` into one fused loop.

:func:`selfsup_zoo.training.data.colour_ops.adjust_hue` is about fifty elementwise tensor ops over
the view, each a pass through memory: 1.6-7 ms for a 224 px view on one thread, most of the CARE
views' time (docs/training.md §8.2). Inductor fuses them into one C++ loop over the pixels. The
compiled kernel is bit-equal to the eager one (it performs the same float32 operations in the same
order, without contraction into fused multiply-adds; tested on every one of the 2^24 RGB colours)
and 4-10x faster. The other jitter ops are cheap in eager mode and compiling them changes their
rounding (contrast and saturation reduce a mean), so only the hue is compiled.

It is compiled once per process for every view size and hue factor (dynamic shapes, the factor a
symbolic float): about 15 s cold, 7 s from inductor's on-disk cache. :func:`warm_up` compiles it in
the process that builds the data loader, so that forked loader workers inherit the compiled code
instead of compiling it each. Where compilation fails (typically no C++ compiler on the machine),
a warning says so once and the eager kernel is used; the views are the same either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from selfsup_zoo.training.data import colour_ops

logger = logging.getLogger(__name__)

__all__ = ["adjust_hue", "warm_up"]

_compiled: Callable[[torch.Tensor, float], torch.Tensor] | None = None
_failed = False


def _kernel() -> Callable[[torch.Tensor, float], torch.Tensor] | None:
    """The compiled kernel, or None once compiling it has failed in this process."""
    global _compiled
    if _failed:
        return None
    if _compiled is None:
        # one thread: the kernel runs in loader workers, which use one torch thread each
        _compiled = torch.compile(
            colour_ops.adjust_hue, dynamic=True, fullgraph=True, options={"cpp.threads": 1}
        )
    return _compiled


def adjust_hue(img: torch.Tensor, factor: float) -> torch.Tensor:
    """:func:`colour_ops.adjust_hue`, compiled (the same values; eager where compiling fails).

    Args:
        img: ``float32[3, H, W]`` of whole levels.
        factor: Hue shift in [-0.5, 0.5].

    Returns:
        ``float32[3, H, W]`` of whole levels.
    """
    global _failed
    kernel = _kernel()
    if kernel is not None:
        try:
            return kernel(img, factor)
        except Exception as err:  # noqa: BLE001  (any compiler failure: fall back, same values)
            _failed = True
            logger.warning(
                "compiling the colour jitter's hue kernel failed (%s: %s); using the eager kernel, "
                "which gives the same views more slowly. Set data.view_args.compile_hue=false to "
                "skip the attempt.",
                type(err).__name__,
                str(err).splitlines()[0] if str(err) else "",
            )
    return colour_ops.adjust_hue(img, factor)


def warm_up() -> bool:
    """Compile the kernel now (before loader workers fork), on a small image.

    Returns:
        True where the compiled kernel is in use, False where it fell back to eager.
    """
    adjust_hue(torch.zeros(3, 8, 8), 0.05)
    return not _failed
