"""On-disk cache of extracted features (safetensors), so that a second k, a second protocol or a
second run reuses one extraction.

A cache entry is keyed by what determines the features: the sha256 of the model's state dict
(weights and buffers, so a random-init twin and a trained model never collide) and its class and
pooling, the evaluation transform, the output kind (pooled or tokens), the precision, and the image
folder's :meth:`~selfsup_zoo.training.data.ImageFolderDataset.fingerprint` (class names, relative
paths and file sizes). Entries live under ``selfsup_zoo.paths.cache_root() / "features"`` unless a
folder is given, one ``<key>.safetensors`` each, written under a temporary name and renamed, so a
reader never sees half a file. Delete the folder to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from selfsup_zoo.evaluation.extract import EvalTransform, FeatureSet
from selfsup_zoo.paths import cache_root

logger = logging.getLogger(__name__)

__all__ = ["CACHE_FORMAT", "feature_cache_dir", "feature_key", "load_features", "save_features"]

#: Bumped whenever the stored layout or the extraction changes meaning (old entries then miss).
CACHE_FORMAT = 1


def feature_cache_dir(folder: str | os.PathLike[str] | None = None) -> Path:
    """``folder`` when given, else ``cache_root() / "features"``."""
    return Path(folder).expanduser() if folder else cache_root() / "features"


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the state dict: every entry's name, dtype, shape and raw bytes, sorted by name.

    Identifies the weights wherever they came from (catalog, hub folder, Hub, random init).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}\0{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def feature_key(
    *,
    weights: str,
    model: nn.Module,
    transform: EvalTransform,
    fingerprint: str,
    tokens: bool,
    precision: str,
) -> tuple[str, dict[str, Any]]:
    """The cache key (sha256 hex) and the description it hashes (stored with the entry).

    Args:
        weights: :func:`weights_sha256` of the model.
        model: the model (its class and global pooling change pooled features).
        transform: the evaluation transform.
        fingerprint: the image folder's fingerprint.
        tokens: tokens instead of pooled features.
        precision: "fp32", "bf16" or "fp16".
    """
    description: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "weights_sha256": weights,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "global_pool": str(getattr(model, "global_pool", "")),
        "transform": transform.as_dict(),
        "folder_fingerprint": fingerprint,
        "output": "tokens" if tokens else "pooled",
        "precision": precision,
    }
    text = json.dumps(description, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), description


def _entry(folder: Path, key: str) -> Path:
    return folder / f"{key}.safetensors"


def load_features(folder: Path, key: str) -> FeatureSet | None:
    """The cached :class:`FeatureSet` of ``key``, or ``None`` (absent or unreadable: a miss)."""
    path = _entry(folder, key)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in ("features", "labels", "indices")}
        classes = json.loads(metadata["classes"])
        skipped = int(metadata["num_skipped"])
        if metadata.get("key") != key:
            raise ValueError("stored key differs from the file name")
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        logger.warning("ignoring unreadable feature cache entry %s (%s)", path, err)
        return None
    logger.info("features read from the cache: %s", path)
    return FeatureSet(
        features=tensors["features"],
        labels=tensors["labels"],
        indices=tensors["indices"],
        classes=classes,
        num_skipped=skipped,
    )


def save_features(
    folder: Path, key: str, features: FeatureSet, description: dict[str, Any]
) -> Path:
    """Store ``features`` under ``key``; returns the entry's path.

    Written to ``.<name>.tmp`` and renamed (safetensors writes to a path, and an ImageNet bank is
    too large to build in memory a second time for :func:`selfsup_zoo._io.atomic_write`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = _entry(folder, key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    metadata = {
        "key": key,
        "classes": json.dumps(features.classes),
        "num_skipped": str(features.num_skipped),
        "description": json.dumps(description, sort_keys=True),
    }
    tensors = {
        "features": features.features.contiguous(),
        "labels": features.labels.contiguous(),
        "indices": features.indices.contiguous(),
    }
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("features cached at %s", path)
    return path
