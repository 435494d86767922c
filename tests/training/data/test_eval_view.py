"""The evaluation view."""

from __future__ import annotations

from pathlib import Path

import torch
from _data_helpers import noise

from selfsup_zoo.training.data.dataset import ImageFolderDataset
from selfsup_zoo.training.data.eval_view import EvalView


def test_eval_view_and_dataset_keys(digits_root: Path) -> None:
    img = torch.from_numpy(noise(50, 80, 2)).permute(2, 0, 1).contiguous()
    out = EvalView(size=32, crop_pct=0.875)(img)
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.uint8
    ds = ImageFolderDataset(digits_root / "val", EvalView(size=16, crop_pct=1.0))
    sample = ds[5]
    assert set(sample) == {"image", "label", "index", "num_replaced"}
    assert sample["label"] == int(ds.targets[5]) and sample["index"] == 5
    # crop_pct 1 on a square 16 px image is the identity.
    raw = ImageFolderDataset(digits_root / "val", None)[5]["image"]
    assert torch.equal(sample["image"], raw)
