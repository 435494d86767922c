"""Embedded digits, data arguments and the data cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from selfsup_zoo.paths import cache_root, data_root
from selfsup_zoo.training.data.dataset import ImageFolderDataset
from selfsup_zoo.training.data.embedded import (
    data_cache_dir,
    default_cache_dir,
    materialize_digits,
    resolve_data_root,
)


def _count(root: Path) -> dict[str, int]:
    return {split: sum(1 for _ in (root / split).rglob("*.png")) for split in ("train", "val")}


def test_materialize_digits(tmp_path: Path) -> None:
    root = materialize_digits(tmp_path / "d", size=12)
    counts = _count(root)
    assert counts == {"train": 1437, "val": 360} and sum(counts.values()) == 1797
    for split in ("train", "val"):
        assert sorted(p.name for p in (root / split).iterdir()) == [str(d) for d in range(10)]
    ds = ImageFolderDataset(root / "train", None)
    img = ds[0]["image"]
    assert (
        img.shape == (3, 12, 12)
        and torch.equal(img[0], img[1])
        and img.max() > 100
        and img.min() < 30
    )
    # Idempotent: a second call rewrites nothing.
    probe = next((root / "train" / "0").iterdir())
    stamp = probe.stat().st_mtime_ns
    os.utime(probe, ns=(stamp - 10**9, stamp - 10**9))
    materialize_digits(root, size=12)
    assert probe.stat().st_mtime_ns == stamp - 10**9
    # Half-written folder (no marker, missing files, stray file) is redone.
    (root / ".selfsup_zoo_digits.json").unlink()
    for p in list((root / "train" / "3").iterdir())[:50]:
        p.unlink()
    (root / "train" / "3" / "stray.png").write_bytes(b"partial")
    materialize_digits(root, size=12)
    assert _count(root) == counts and not (root / "train" / "3" / "stray.png").exists()
    # No validation split: all 1797 in train.
    assert _count(materialize_digits(tmp_path / "all", size=8, val_every=0)) == {
        "train": 1797,
        "val": 0,
    }


def test_resolve_data_root(tmp_path: Path, digits_root: Path) -> None:
    train = resolve_data_root("embedded:digits@8", tmp_path)
    assert train == tmp_path / "digits-8" / "train" and train.is_dir()
    assert resolve_data_root("embedded:digits@8/val", tmp_path) == tmp_path / "digits-8" / "val"
    assert resolve_data_root(str(digits_root), tmp_path) == digits_root
    with pytest.raises(FileNotFoundError, match="ImageNet layout"):
        resolve_data_root(str(tmp_path / "missing"), tmp_path)
    with pytest.raises(ValueError, match="unknown embedded"):
        resolve_data_root("embedded:cifar", tmp_path)
    with pytest.raises(ValueError, match="bad size"):
        resolve_data_root("embedded:digits@big", tmp_path)


def test_data_cache_dir_follows_the_package_cache_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SELFSUP_ZOO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "selfsup_zoo"
    assert data_cache_dir() == tmp_path / "xdg" / "selfsup_zoo" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_cache_dir() == tmp_path / "home" / ".cache" / "selfsup_zoo" / "data"
    monkeypatch.setenv("SELFSUP_ZOO_CACHE", str(tmp_path / "zoo"))  # wins over XDG_CACHE_HOME
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "zoo" and default_cache_dir() == cache_root()
    assert data_cache_dir() == tmp_path / "zoo" / "data" == data_root()
    assert data_cache_dir(tmp_path / "mine") == tmp_path / "mine"  # a recipe's data.cache_dir
    assert data_cache_dir("") == tmp_path / "zoo" / "data"
