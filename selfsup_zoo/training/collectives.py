"""The collectives a method may use, provided by the engine.

A method knows nothing about processes (``docs/training.md``): when a loss needs a statistic over
the whole global batch, such as the iBOT centre, it asks the ``Collectives`` object the engine
gave it. The default is a single process, so a method built by hand (tests, notebooks, the
benchmarks) works without a process group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


class Collectives:
    """One process: sums are already global, the world has one member."""

    @property
    def world_size(self) -> int:
        return 1

    def all_reduce_sum_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum each tensor in place over every process (a no-op for one process)."""


class ProcessGroupCollectives(Collectives):
    """The default ``torch.distributed`` process group (gloo or NCCL), as the engine set it up."""

    def __init__(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("ProcessGroupCollectives needs an initialised process group")

    @property
    def world_size(self) -> int:
        return dist.get_world_size()

    def all_reduce_sum_(self, tensors: Sequence[torch.Tensor]) -> None:
        for t in tensors:
            dist.all_reduce(t)


def default_collectives() -> Collectives:
    """The process group's collectives when one is initialised, else the single-process ones."""
    if dist.is_available() and dist.is_initialized():
        return ProcessGroupCollectives()
    return Collectives()
