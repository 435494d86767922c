"""Evaluation test fixtures: a private cache root, small image folders, a tiny hub folder."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import timm
import torch
from torchvision.io import write_png

from selfsup_zoo.hub_folder import write_hub_folder
from selfsup_zoo.training.data import resolve_data_root

TINY_CFG = dict(input_size=(3, 32, 32), crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@pytest.fixture(autouse=True)
def private_cache_root(tmp_path, monkeypatch) -> Path:
    """Feature caches (and any default data) go to the test's folder, not the user's cache."""
    root = tmp_path / "cache_root"
    monkeypatch.setenv("SELFSUP_ZOO_CACHE", str(root))
    return root


@pytest.fixture
def make_folder(tmp_path) -> Callable[..., Path]:
    """``make_folder(name, {"a": 3, "b": 2}, seed=0)``: random RGB PNGs of varying sizes in
    ImageNet layout under ``tmp_path/name``; class ``c`` gets its own mean brightness."""

    def make(name: str, counts: dict[str, int], seed: int = 0, sizes: Sequence[int] = (20, 28)):
        gen = torch.Generator().manual_seed(seed)
        root = tmp_path / name
        for c_index, (cls, n) in enumerate(sorted(counts.items())):
            (root / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = sizes[i % len(sizes)], sizes[(i + 1) % len(sizes)]
                base = 40 * c_index
                img = (torch.rand(3, h, w, generator=gen) * 120 + base).to(torch.uint8)
                write_png(img, str(root / cls / f"{cls}_{i:03d}.png"))
        return root

    return make


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory) -> Path:
    """A hub folder (plain timm ``resnet10t`` seeded weights, 32-px eval config): ``local-dir:``."""
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=0)
    out = tmp_path_factory.mktemp("tiny_hub")
    write_hub_folder(
        out, model.state_dict(), architecture="resnet10t", pretrained_cfg=dict(TINY_CFG)
    )
    return out


@pytest.fixture(scope="session")
def vit_hub(tmp_path_factory) -> Path:
    """A ViT-Ti/16 at 32 px (4 patches) as a hub folder: ``local-dir:``."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32)
    out = tmp_path_factory.mktemp("vit_hub")
    write_hub_folder(
        out,
        model.state_dict(),
        architecture="vit_tiny_patch16_224",
        model_args={"img_size": 32},
        pretrained_cfg=dict(TINY_CFG),
    )
    return out


def _subset(src: Path, dest: Path, count: int) -> Path:
    files = sorted(src.rglob("*.png"))
    for f in files[:: max(1, len(files) // count)][:count]:  # spread over the 10 classes
        (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dest / f.parent.name / f.name)
    return dest


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real digit folders: 48 training images (6 steps per epoch at batch 8) that are also
    the k-NN's bank, and 30 held-out validation images (``cache``: their data cache)."""
    base = tmp_path_factory.mktemp("digits")
    cache = base / "cache"
    return {
        "cache": cache,
        "train": _subset(resolve_data_root("embedded:digits@32/train", cache), base / "tr", 48),
        "val": _subset(resolve_data_root("embedded:digits@32/val", cache), base / "va", 30),
    }
