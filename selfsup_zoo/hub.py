"""Kept for compatibility: the names ``selfsup_zoo.hub`` used to define, re-exported.

New code imports from the modules that define them:

- :mod:`selfsup_zoo.errors`: ``ZooError`` and every subclass (``WeightsNotPublishedError``,
  ``WeightsNotCachedError``, ``WeightsDownloadError``, ``CorruptWeightsError``,
  ``HashMismatchError``, ``ArchitectureMismatchError``, ``UnsafeCheckpointError``,
  ``ConversionError``, ``InvalidHubFolderError``) and ``UnknownNameError``;
- :mod:`selfsup_zoo.weights`: ``WEIGHTS_DIR_ENV``, ``ResolvedWeights``, ``weights_dir``,
  ``installed_path``, ``file_sha256``, ``read_safetensors_header``, ``resolve_weights``,
  ``resolve_cfg_weights``;
- :mod:`selfsup_zoo.shapes`: ``meta_model``, ``expected_shapes``, ``compare_keys``,
  ``check_state_dict``;
- :mod:`selfsup_zoo.hub_folder`: ``HubFolder``, ``write_hub_folder``, ``install_hub_folder``.
"""

from __future__ import annotations

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
from .hub_folder import HubFolder, install_hub_folder, write_hub_folder
from .shapes import check_state_dict, compare_keys, expected_shapes, meta_model
from .weights import (
    WEIGHTS_DIR_ENV,
    ResolvedWeights,
    file_sha256,
    installed_path,
    read_safetensors_header,
    resolve_cfg_weights,
    resolve_weights,
    weights_dir,
)

__all__ = [
    "WEIGHTS_DIR_ENV",
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
    "ResolvedWeights",
    "HubFolder",
    "weights_dir",
    "installed_path",
    "file_sha256",
    "read_safetensors_header",
    "resolve_weights",
    "resolve_cfg_weights",
    "check_state_dict",
    "compare_keys",
    "expected_shapes",
    "meta_model",
    "write_hub_folder",
    "install_hub_folder",
]
