"""One batch of SERE views, parsed (the collated output of ``selfsup_zoo.training.data``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


def _as_views(value: Any, name: str) -> Tensor | None:
    """Batch entries are [V, B, ...] tensors; a list of per-view tensors is stacked."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value
    if isinstance(value, Sequence):
        return torch.stack(list(value)) if len(value) else None
    raise TypeError(f"batch[{name!r}] must be a tensor or a sequence of tensors")


@dataclass(frozen=True)
class SereViews:
    """One batch of SERE views (see ``selfsup_zoo.training.data``), view-major."""

    global_crops: Tensor  # [2, B, 3, H, W]
    local_crops: Tensor | None  # [L, B, 3, h, w]
    masks: Tensor | None  # [2B, H/p, W/p] bool, True = mask token
    global_boxes: Tensor  # [2, B, 5] (x0, y0, w, h, flip)
    local_boxes: Tensor | None  # [L, B, 5]

    @property
    def n_local(self) -> int:
        """L, the number of local views."""
        return 0 if self.local_crops is None else self.local_crops.shape[0]

    @classmethod
    def from_batch(cls, batch: Mapping[str, Any]) -> SereViews:
        """Parse a collated batch (tensors or lists of per-view tensors)."""
        globals_ = _as_views(batch["global_crops"], "global_crops")
        if globals_ is None or globals_.shape[0] != 2:
            raise ValueError("SERE needs exactly two global crops")
        locals_ = _as_views(batch.get("local_crops"), "local_crops")
        masks = _as_views(batch.get("masks"), "masks")
        global_boxes = _as_views(batch["global_boxes"], "global_boxes")
        if global_boxes is None:
            raise ValueError("SERE needs the boxes of the two global crops")
        return cls(
            global_crops=globals_,
            local_crops=locals_,
            masks=None if masks is None else masks.flatten(0, 1).to(torch.bool),
            global_boxes=global_boxes,
            local_boxes=(
                _as_views(batch.get("local_boxes"), "local_boxes") if locals_ is not None else None
            ),
        )
