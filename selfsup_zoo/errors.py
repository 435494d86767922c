"""Every error the zoo raises about names, weights and checkpoints, and the "did you mean" hint.

The bottom of the zoo's layers: it imports nothing from the package, so that the catalog, the
shape checks, weight resolution and the converters can all raise the same classes. Each message
says what was wrong and what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ZooError",
    "UnknownNameError",
    "WeightsNotPublishedError",
    "WeightsNotCachedError",
    "WeightsDownloadError",
    "CorruptWeightsError",
    "HashMismatchError",
    "ArchitectureMismatchError",
    "UnsafeCheckpointError",
    "ConversionError",
    "InvalidHubFolderError",
    "closest",
    "did_you_mean",
]


class ZooError(RuntimeError):
    """Base class of the errors this package raises about weights and checkpoints."""


class UnknownNameError(LookupError):
    """An architecture, checkpoint or recipe name that the catalog does not know."""


class WeightsNotPublishedError(ZooError, FileNotFoundError):
    """The checkpoint is in the catalog but its weights are not on the Hub (yet)."""


class WeightsNotCachedError(ZooError, FileNotFoundError):
    """Offline (``HF_HUB_OFFLINE=1`` or no network) and the weights are not in the local cache."""


class WeightsDownloadError(ZooError):
    """The Hub refused the download (repo, revision or file missing, access denied)."""


class CorruptWeightsError(ZooError):
    """A weights file is truncated, has a damaged header, or is not a safetensors file."""


class HashMismatchError(ZooError):
    """A weights file's sha256 differs from the one the catalog records."""


class ArchitectureMismatchError(ZooError):
    """Weights whose keys or shapes do not fit the architecture they are loaded into."""


class UnsafeCheckpointError(ZooError):
    """A checkpoint that cannot be read without unpickling arbitrary objects: refused."""


class ConversionError(ZooError):
    """An official checkpoint that the converter cannot map to a zoo checkpoint."""


class InvalidHubFolderError(ZooError):
    """A hub folder that would not load with plain timm (or lacks a proper model card)."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """The hint appended to an "unknown name" message: the known names closest to ``name``.

    Args:
        name: the name that was not found.
        known: the names that exist.

    Returns:
        ``" Did you mean 'a', 'b'?"`` (leading space, up to three names, closest first), or ``""``
        when nothing is close enough to be worth suggesting.
    """
    close = closest(name, known)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def closest(name: str, known: Iterable[str], n: int = 3, cutoff: float = 0.5) -> list[str]:
    """The known names closest to ``name`` (at most ``n``, closest first; ``difflib`` ratio at
    least ``cutoff``): the one matching rule behind every "did you mean" of the package."""
    return difflib.get_close_matches(name, list(known), n=n, cutoff=cutoff)
