"""Image folders: decoding, unreadable files, layout errors and the fingerprint."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_helpers import noise, write_image

from selfsup_zoo.training.data.care_views import CareViews
from selfsup_zoo.training.data.collate import collate_views
from selfsup_zoo.training.data.dataset import CorruptImageError, ImageFolderDataset


def test_grayscale_and_rgba_become_rgb(tmp_path: Path) -> None:
    gray = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    write_image(tmp_path / "a" / "gray.png", gray)
    rgba = np.dstack([noise(12, 14, 3), np.full((12, 14), 77, np.uint8)])
    write_image(tmp_path / "b" / "rgba.png", rgba, mode="RGBA")
    write_image(tmp_path / "b" / "rgb.jpg", noise(10, 10, 4))
    ds = ImageFolderDataset(tmp_path, None)
    assert ds.classes == ["a", "b"] and ds.targets.tolist() == [0, 1, 1]
    g = ds[0]["image"]
    assert g.shape == (3, 20, 30) and g.dtype == torch.uint8
    assert torch.equal(g[0], torch.from_numpy(gray)) and torch.equal(g[0], g[2])
    # Sorted file order: rgb.jpg before rgba.png.
    c = ds[2]["image"]
    assert c.shape == (3, 12, 14) and torch.equal(
        c, torch.from_numpy(rgba[..., :3]).permute(2, 0, 1)
    )


def test_corrupt_files_are_replaced_and_counted(
    folder_with_corrupt_files: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds = ImageFolderDataset(folder_with_corrupt_files, CareViews(size=12), seed=0)
    assert len(ds) == 5
    with caplog.at_level(logging.WARNING, logger="selfsup_zoo.training.data"):
        batch = collate_views([ds[i] for i in range(len(ds))] + [ds[1]])
    assert batch["num_replaced"] == 3  # indices 1, 2 and 1 again
    assert batch["x1"].shape == (6, 3, 12, 12)
    # Both bad files resolve to the next readable image (3.png, label cat) ...
    assert batch["label"].tolist() == [0, 0, 0, 0, 1, 0]
    # ... augmented with the requested index's seed, so the views differ from sample 3's.
    assert not torch.equal(batch["x1"][1], batch["x1"][3])
    assert torch.equal(batch["x1"][1], batch["x1"][5])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warned) == 2 and any("1.jpg" in m for m in warned) and any("2.png" in m for m in warned)
    )
    # The substituted image is exactly the next readable file.
    raw = ImageFolderDataset(folder_with_corrupt_files, None)
    assert torch.equal(raw[2]["image"], raw[3]["image"]) and raw[2]["num_replaced"] == 1


def test_corrupt_file_wraps_around(folder_with_corrupt_files: Path) -> None:
    (folder_with_corrupt_files / "dog" / "4.png").write_bytes(
        b""
    )  # last file unreadable -> index 0
    ds = ImageFolderDataset(folder_with_corrupt_files, None)
    assert torch.equal(ds[4]["image"], ds[0]["image"]) and ds[4]["label"] == 0


def test_strict_raises_naming_the_file(folder_with_corrupt_files: Path) -> None:
    ds = ImageFolderDataset(folder_with_corrupt_files, CareViews(size=12), strict=True)
    assert ds[0]["num_replaced"] == 0
    with pytest.raises(CorruptImageError, match=r"1\.jpg.*strict=False"):
        ds[1]
    with pytest.raises(CorruptImageError, match=r"2\.png"):
        ds[2]


def test_all_unreadable_raises(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / "x").mkdir(exist_ok=True)
        (tmp_path / "x" / f"{i}.jpg").write_bytes(b"junk")
    ds = ImageFolderDataset(tmp_path, None)
    with pytest.raises(RuntimeError, match="none of the 3 images"):
        ds[0]


def test_missing_or_empty_root_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="<class>/<image>"):
        ImageFolderDataset(tmp_path / "nope", None)
    with pytest.raises(FileNotFoundError, match="no class folders"):
        ImageFolderDataset(tmp_path, None)
    write_image(tmp_path / "flat.png", noise(4, 4, 0))  # images directly under root: wrong layout
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        ImageFolderDataset(tmp_path, None)


def test_fingerprint_changes_with_the_folder_content(tmp_path: Path) -> None:
    for c in ("a", "b"):
        for i in range(3):
            write_image(tmp_path / c / f"{i}.png", noise(8, 8, i))
    first = ImageFolderDataset(tmp_path, None).fingerprint()
    assert ImageFolderDataset(tmp_path, None).fingerprint() == first  # stable across scans
    write_image(tmp_path / "b" / "3.png", noise(8, 8, 3))
    added = ImageFolderDataset(tmp_path, None).fingerprint()
    assert added != first
    os.remove(tmp_path / "b" / "3.png")
    assert ImageFolderDataset(tmp_path, None).fingerprint() == first
    os.remove(tmp_path / "a" / "0.png")
    assert ImageFolderDataset(tmp_path, None).fingerprint() not in (first, added)
