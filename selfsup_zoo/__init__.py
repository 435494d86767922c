"""selfsup-zoo: CARE and SERE self-supervised backbones for timm.

Importing the package registers the zoo's architectures with timm::

    import timm, selfsup_zoo
    model = timm.create_model("sere_vit_small", pretrained=True)

Light on purpose: no network, no file access at import time.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import timm
from torch import nn

from . import models  # noqa: F401  (registers care_* / sere_* with timm)
from .catalog import CATALOG, CatalogEntry, architectures, get_entry, unknown_name_message
from .errors import (
    ArchitectureMismatchError,
    ConversionError,
    CorruptWeightsError,
    HashMismatchError,
    InvalidHubFolderError,
    UnknownNameError,
    UnsafeCheckpointError,
    WeightsDownloadError,
    WeightsNotCachedError,
    WeightsNotPublishedError,
    ZooError,
)
from .hub_folder import HubFolder, write_hub_folder
from .weights import weights_dir

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "CATALOG",
    "CatalogEntry",
    "get_entry",
    "list_checkpoints",
    "list_models",
    "create_model",
    "write_hub_folder",
    "HubFolder",
    "weights_dir",
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
]


def list_models(pattern: str = "*") -> list[str]:
    """Zoo architectures matching an fnmatch pattern.

    Args:
        pattern: e.g. ``"care_*"``.

    Returns:
        The matching architectures (``care_resnet50``, ...), in catalog order.
    """
    return [a for a in architectures() if fnmatch.fnmatch(a, pattern)]


def list_checkpoints(pattern: str = "*", *, published_only: bool = False) -> list[str]:
    """Catalog checkpoints matching an fnmatch pattern.

    Args:
        pattern: e.g. ``"sere_*"``.
        published_only: only checkpoints whose weights are on the Hub.

    Returns:
        The matching ``<arch>.<tag>`` names, in catalog order.
    """
    return [
        name
        for name, entry in CATALOG.items()
        if fnmatch.fnmatch(name, pattern) and (entry.published or not published_only)
    ]


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` for zoo names, with a helpful error for unknown ones.

    ``name`` is an architecture (``care_resnet50``: its default checkpoint), a checkpoint
    (``care_resnet50.in1k_ep800``) or a hub folder (``hf-hub:org/repo``, ``local-dir:/path``);
    every other argument goes to ``timm.create_model``.

    Args:
        name: zoo architecture, catalog checkpoint, or ``hf-hub:`` / ``local-dir:`` folder.
        pretrained: load the weights (see :mod:`selfsup_zoo.weights` for where they are found).
        **kwargs: passed to ``timm.create_model`` (``num_classes``, ``features_only``, ...).

    Returns:
        The timm model.

    Raises:
        UnknownNameError: an architecture or tag the catalog does not know, with close names.
    """
    if name.startswith(("hf-hub:", "local-dir:")):
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    arch, _, tag = name.partition(".")
    known_archs = list_models()
    if arch not in known_archs:
        raise UnknownNameError(unknown_name_message(name, known_archs + list(CATALOG), "model"))
    if tag:
        get_entry(name)  # an unknown tag: the catalog's error, with close names
    return timm.create_model(name, pretrained=pretrained, **kwargs)
