"""The world-size-invariant batch sampler: the same images at every global step on any layout."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

__all__ = ["StepSampler"]


class StepSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's micro-batches of ``(epoch, index)`` pairs, step by step.

    Global step ``s`` of epoch ``e`` uses positions ``[s·G, (s+1)·G)`` of a permutation seeded by
    (seed, e); rank ``r`` takes ``[r·G/W, (r+1)·G/W)`` of that, split into ``accum`` micro-batches
    of ``micro`` images. The tail that does not fill a global batch is dropped (drop_last). The
    pairs carry the epoch to persistent workers (the dataset accepts ``(epoch, index)``).

    Args:
        num_samples: images in the data set.
        global_batch: images per optimizer step over all processes (G).
        micro_batch: images per forward pass on one process.
        world_size: number of processes (W).
        rank: this process.
        seed: the run's seed (the permutation of epoch e is seeded by ``[seed, e]``).
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        micro_batch: int,
        world_size: int,
        rank: int,
        seed: int,
    ) -> None:
        if global_batch % (world_size * micro_batch):
            raise ValueError(
                f"global batch {global_batch} is not a multiple of world size {world_size} "
                f"x per-device batch {micro_batch}"
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.micro = micro_batch
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.accum = global_batch // (world_size * micro_batch)
        self.steps_per_epoch = num_samples // global_batch
        self.epoch = 0
        self.start_step = 0

    def set_position(self, epoch: int, start_step: int) -> None:
        """Start the next iteration at ``start_step`` (0-based, within the epoch) of ``epoch``."""
        self.epoch = epoch
        self.start_step = start_step

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the data set in ``epoch``: int64 ``[num_samples]``."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = self.permutation(self.epoch)
        share = self.global_batch // self.world_size
        for s in range(self.start_step, self.steps_per_epoch):
            base = s * self.global_batch + self.rank * share
            for a in range(self.accum):
                chunk = perm[base + a * self.micro : base + (a + 1) * self.micro]
                yield [(self.epoch, int(i)) for i in chunk]
