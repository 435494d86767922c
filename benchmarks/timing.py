"""What one case subprocess measures: wall time per call after warm-up, peak memory, FLOPs."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Prepared:
    """A case ready to time: ``call`` processes ``items`` images once."""

    call: Callable[[], object]
    items: int
    flops: Callable[[], int] | None = None  # FLOPs of one call (the GFLOP/s column)
    device: str = "cpu"
    model: torch.nn.Module | None = None  # the module a step case trains (DDP-wrapped or not)


@dataclass
class Measured:
    """One subprocess's measurements (serialised as one JSON line)."""

    seconds: list[float]
    items: int
    maxrss_mb: float
    flops: int | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """Plain dict for :func:`json.dumps`."""
        return asdict(self)


def maxrss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(prepared: Prepared, warmup: int, repeats: int) -> Measured:
    """Time ``prepared.call`` ``repeats`` times after ``warmup`` untimed calls.

    Args:
        prepared: The case.
        warmup: Untimed leading calls (allocators, kernel selection, ``torch.compile``).
        repeats: Timed calls.

    Returns:
        Seconds per call, images per call, peak memory (CPU: maxrss; GPU: max allocated).
    """
    for _ in range(warmup):
        prepared.call()
    _sync(prepared.device)
    if prepared.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        prepared.call()
        _sync(prepared.device)
        seconds.append(time.perf_counter() - start)
    peak = maxrss_mb()
    if prepared.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    flops = prepared.flops() if prepared.flops is not None else None
    return Measured(seconds, prepared.items, peak, flops)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` from :class:`torch.utils.flop_counter.FlopCounterMode`."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
