"""Per-sample deterministic randomness for the data pipeline.

Every random draw made for sample ``index`` in epoch ``epoch`` comes from two seeds derived by
hashing ``(seed, epoch, index)`` (:func:`sample_seeds`):

* Python-level draws (crop boxes, flips, blur, solarize, masks) use a private ``random.Random``
  seeded with the first;
* the ``torchvision.transforms.v2`` ops that draw from torch's global CPU generator (colour jitter,
  grayscale) run inside :func:`seeded_torch`, which re-seeds that generator with the second within
  ``torch.random.fork_rng(devices=[])``.

Hence a sample's views depend only on ``(seed, epoch, index)``:

* **worker invariance**: not on the number of DataLoader workers, nor on the world size or on the
  order in which samples are read;
* **resume-exactness**: a job restarted in the middle of an epoch produces the same views for the
  remaining samples as the uninterrupted run would have;
* the caller's RNG state (Python and torch) is left untouched.

The official loaders seed per process, so their streams differ per rank and per worker (see
docs/methods/sere.md §8 #17). Our random streams are therefore not bit-identical to theirs
(different generators and seeding), which does not matter for loss parity on given inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch

__all__ = ["sample_seeds", "seeded_torch"]


def sample_seeds(seed: int, epoch: int, index: int) -> tuple[int, int]:
    """Two independent seeds for one sample's random draws.

    A cryptographic hash rather than arithmetic (``seed + epoch * N + index``) so that neighbouring
    samples/epochs get unrelated streams and no two ``(epoch, index)`` pairs collide.

    Args:
        seed: The run's data seed.
        epoch: The epoch the sample is drawn for.
        index: The sample's index in the data set.

    Returns:
        ``(python_seed, torch_seed)``, two 63-bit non-negative integers: the first for the sample's
        ``random.Random``, the second for torch's CPU generator (:func:`seeded_torch`).
    """
    digest = hashlib.blake2b(
        f"{int(seed)}:{int(epoch)}:{int(index)}".encode(), digest_size=16, person=b"selfsupzoo-data"
    ).digest()
    mask = (1 << 63) - 1
    return int.from_bytes(digest[:8], "little") & mask, int.from_bytes(digest[8:], "little") & mask


@contextlib.contextmanager
def seeded_torch(torch_seed: int) -> Iterator[None]:
    """Run a block with torch's CPU generator re-seeded, restoring the caller's state afterwards.

    ``torch.default_generator.manual_seed`` rather than ``torch.manual_seed``: the latter also
    re-seeds every CUDA generator, which ``fork_rng(devices=[])`` would not restore.

    Args:
        torch_seed: Seed for torch's default CPU generator inside the block.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(torch_seed)
        yield
