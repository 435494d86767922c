"""Batching of view dictionaries, and the uint8 -> float normalisation done on the device."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["VIEW_FIRST_KEYS", "collate_views", "normalize_uint8"]

#: Keys whose per-sample tensors carry a leading view dimension; :func:`collate_views` stacks them
#: as ``[V, B, ...]`` so that ``batch[key][v]`` is the batch of view ``v``.
VIEW_FIRST_KEYS: frozenset[str] = frozenset(
    {"global_crops", "local_crops", "masks", "global_boxes", "local_boxes"}
)


def normalize_uint8(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """ToTensor then Normalize, done wherever the images are.

    Views stay uint8 through the data pipeline (4x less host memory and host-to-device traffic than
    float32); the engine and the evaluation convert them on the device.

    Args:
        images: ``uint8[..., 3, H, W]`` images.
        mean: Per-channel mean on the 0..1 scale, broadcasting against the channel dimension (e.g.
            shape ``[3, 1, 1]``).
        std: Per-channel standard deviation, same shape as ``mean``.

    Returns:
        ``float32[..., 3, H, W]``, ``(images / 255 - mean) / std``.
    """
    return images.to(torch.float32).div_(255.0).sub_(mean).div_(std)


def collate_views(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch a list of sample dicts.

    Tensors under :data:`VIEW_FIRST_KEYS` (leading view dim) become ``[V, B, ...]``; other tensors
    ``[B, ...]`` (``x1``/``x2``/``image``); ``num_replaced`` is summed to an ``int``; other ints
    (``label``, ``index``) become int64 ``[B]``, floats float64 ``[B]``; anything else a list.

    Args:
        samples: ``B >= 1`` sample dicts with the same keys (as the data set returns them).

    Returns:
        The batch dict, keyed as the samples.
    """
    if not samples:
        raise ValueError("collate_views needs at least one sample")
    keys = list(samples[0].keys())
    for s in samples[1:]:
        if s.keys() != samples[0].keys():
            raise ValueError(f"samples have different keys: {sorted(samples[0])} vs {sorted(s)}")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        first = values[0]
        if key == "num_replaced":
            batch[key] = int(sum(values))
        elif isinstance(first, torch.Tensor):
            batch[key] = torch.stack(values, dim=1 if key in VIEW_FIRST_KEYS else 0)
        elif isinstance(first, (bool, int, np.integer)):
            batch[key] = torch.tensor(values, dtype=torch.int64)
        elif isinstance(first, (float, np.floating)):
            batch[key] = torch.tensor(values, dtype=torch.float64)
        else:
            batch[key] = values
    return batch
