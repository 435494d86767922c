"""A validation split carved from a training folder: seeded, stratified, the same on every run.

A probe that picks its best epoch or learning rate on the test split reports an optimistic number;
holding a fraction of each training class out gives a split to select on instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from selfsup_zoo.training.data.dataset import ImageFolderDataset

__all__ = ["IndexSubset", "stratified_holdout"]


def stratified_holdout(
    targets: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split image indices into (kept for training, held out), ``fraction`` of every class held out.

    A class of ``n`` images loses ``round(fraction * n)`` of them, at least one and never all (a
    class of one image stays in training). Which ones depends only on ``seed`` and the labels.

    Args:
        targets: int64 ``[N]`` labels in the folder's order.
        fraction: in [0, 1).
        seed: the split's seed.

    Returns:
        Sorted int64 index arrays ``[N - H]`` and ``[H]``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    targets = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 0x5EED])
    kept: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        members = members[rng.permutation(len(members))]
        k = int(round(fraction * len(members))) if fraction > 0 else 0
        if fraction > 0 and len(members) > 1:
            k = min(max(k, 1), len(members) - 1)
        elif len(members) <= 1:
            k = 0
        held.append(members[:k])
        kept.append(members[k:])
    empty = np.zeros(0, dtype=np.int64)
    return (
        np.sort(np.concatenate(kept)) if kept else empty,
        np.sort(np.concatenate(held)) if held else empty,
    )


class IndexSubset(Dataset):
    """The images ``indices`` of an :class:`ImageFolderDataset`, renumbered ``0..len-1``.

    Items are an index or an ``(epoch, index)`` pair, as for the folder itself; the sample's views
    are seeded by the folder index, so an image is augmented the same way whichever split holds it.

    Args:
        base: the whole folder.
        indices: int64 ``[M]`` folder indices.
    """

    def __init__(self, base: ImageFolderDataset, indices: np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = base.targets[self.indices]
        self.classes = base.classes

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def root(self) -> Path:
        """The folder the subset is carved from."""
        return self.base.root

    def fingerprint(self) -> str:
        """sha256 of the folder's fingerprint and of the selected indices: changes when the folder
        or the carved split does."""
        digest = hashlib.sha256(self.base.fingerprint().encode("ascii"))
        digest.update(self.indices.tobytes())
        return digest.hexdigest()

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(item, (tuple, list)):
            return self.base[(int(item[0]), int(self.indices[int(item[1])]))]
        return self.base[int(self.indices[int(item)])]
