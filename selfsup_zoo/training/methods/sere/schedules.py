"""SERE's per-epoch schedules (the teacher temperatures; the rest are the engine's).

Section numbers (§) refer to ``docs/methods/sere.md``.
"""

from __future__ import annotations

import numpy as np


def teacher_temp_schedule(
    warmup_temp: float, final_temp: float, warmup_epochs: int, epochs: int, start_epoch: int = 0
) -> np.ndarray:
    """Per-epoch teacher temperature (§3.4).

    ``start_epoch`` epochs at ``warmup_temp``, then a linear ramp over ``warmup_epochs`` values
    whose last one is already ``final_temp``, then ``final_temp``.

    Args:
        warmup_temp: the starting temperature (0.04).
        final_temp: the temperature after the ramp (0.07).
        warmup_epochs: length of the ramp, its last value included.
        epochs: length of the schedule.
        start_epoch: epochs held at ``warmup_temp`` before the ramp (``pred_start_epoch`` for the
            patch temperature, 0 for the CLS temperature).

    Returns:
        [epochs] float64 temperatures, indexed by epoch.
    """
    rest = epochs - warmup_epochs - start_epoch
    if rest < 0:
        raise ValueError(
            f"epochs ({epochs}) must be >= warmup epochs ({warmup_epochs}) "
            f"+ start epoch ({start_epoch})"
        )
    return np.concatenate(
        (
            np.full(start_epoch, warmup_temp),
            np.linspace(warmup_temp, final_temp, warmup_epochs),
            np.full(rest, final_temp),
        )
    )
