"""Tests of the data pipeline (selfsup_zoo.training.data). Small images keep the file under ~15 s."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from selfsup_zoo.training.data import (
    CareViews,
    CorruptImageError,
    EvalView,
    ImageFolderDataset,
    SereViews,
    block_mask,
    blur_kernel_size,
    collate_views,
    materialize_digits,
    random_mask,
    resolve_data_root,
    sample_crop_box,
    sample_seeds,
)

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec and warns on every call; the
# project still decodes with torchvision.io (required), so keep the test log readable.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision are deprecated:DeprecationWarning"
)

# Small SERE configuration: 32 px globals on a 4x4 patch grid, three 16 px locals.
SMALL_SERE = dict(global_size=32, local_size=16, patch_size=8, local_crops=3)


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialize_digits(tmp_path_factory.mktemp("digits"), size=16)


def _write(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _apply(views, img: torch.Tensor, seed: int, epoch: int = 0) -> dict:
    """Call a view transform the way the dataset does: both generators seeded from one number."""
    torch.manual_seed(seed)
    return views(img, random.Random(seed), epoch)


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------
# Views and collation: shapes and dtypes
# ------------------------------------------------------------------------------------------------


def test_care_view_ops_run_in_the_official_order() -> None:
    """care.md §4.1: crop -> jitter -> blur -> grayscale -> flip -> solarize. Replayed by hand with
    jitter and solarize off and blur, grayscale, flip always on: pixel-equal to the views, and not
    to the order with grayscale before the blur (they differ by rounding on this noise image)."""
    from torchvision.transforms.v2 import functional as TF

    from selfsup_zoo.training.data import _interp

    img = torch.from_numpy(_noise(40, 50, 1)).permute(2, 0, 1).contiguous()
    views = CareViews(
        size=24,
        scale=(0.3, 1.0),
        jitter_p=0.0,
        grayscale_p=1.0,
        blur_p=1.0,
        solarize_p=0.0,
        flip_p=1.0,
        sigma=(1.0, 2.0),
    )
    out = _apply(views, img, seed=3)
    rng = random.Random(3)
    kernel = views.views[0].kernel
    for key in ("x1", "x2"):
        x0, y0, w, h = sample_crop_box(rng, 40, 50, (0.3, 1.0), views.ratio)
        crop = TF.resized_crop(
            img, y0, x0, h, w, [24, 24], interpolation=_interp("bilinear"), antialias=True
        )
        assert rng.random() < 1.0
        sigma = rng.uniform(1.0, 2.0)
        official = TF.rgb_to_grayscale(TF.gaussian_blur(crop, [kernel, kernel], [sigma, sigma]), 3)
        other = TF.gaussian_blur(TF.rgb_to_grayscale(crop, 3), [kernel, kernel], [sigma, sigma])
        assert rng.random() < 1.0  # the flip
        assert torch.equal(out[key], TF.horizontal_flip(official))
        assert not torch.equal(out[key], TF.horizontal_flip(other))


def test_care_views_shapes_and_collate() -> None:
    img = torch.from_numpy(_noise(40, 50, 0)).permute(2, 0, 1).contiguous()
    views = CareViews(size=24)
    out = views(img, random.Random(0), 0)
    assert set(out) == {"x1", "x2"}
    for key in ("x1", "x2"):
        assert out[key].shape == (3, 24, 24) and out[key].dtype == torch.uint8
    samples = [dict(_apply(views, img, i), label=i % 2, num_replaced=i % 2) for i in range(5)]
    batch = collate_views(samples)
    assert batch["x1"].shape == (5, 3, 24, 24) and batch["x2"].dtype == torch.uint8
    assert batch["label"].tolist() == [0, 1, 0, 1, 0] and batch["label"].dtype == torch.int64
    assert batch["num_replaced"] == 2


def test_sere_views_shapes_and_collate() -> None:
    img = torch.from_numpy(_noise(60, 45, 1)).permute(2, 0, 1).contiguous()
    views = SereViews(**SMALL_SERE)
    out = views(img, random.Random(0), 0)
    assert out["global_crops"].shape == (2, 3, 32, 32) and out["global_crops"].dtype == torch.uint8
    assert out["local_crops"].shape == (3, 3, 16, 16) and out["local_crops"].dtype == torch.uint8
    assert out["masks"].shape == (2, 4, 4) and out["masks"].dtype == torch.bool
    assert out["global_boxes"].shape == (2, 5) and out["global_boxes"].dtype == torch.float64
    assert out["local_boxes"].shape == (3, 5) and out["local_boxes"].dtype == torch.float64
    batch = collate_views([dict(_apply(views, img, i), label=7, num_replaced=0) for i in range(4)])
    assert batch["global_crops"].shape == (2, 4, 3, 32, 32)
    assert batch["local_crops"].shape == (3, 4, 3, 16, 16)
    assert batch["masks"].shape == (2, 4, 4, 4)
    assert batch["global_boxes"].shape == (2, 4, 5) and batch["local_boxes"].shape == (3, 4, 5)
    assert batch["global_crops"].is_contiguous()
    # View-first stacking: batch[key][v][b] is sample b's view v.
    again = _apply(views, img, 2)
    assert torch.equal(batch["local_crops"][1, 2], again["local_crops"][1])
    assert torch.equal(batch["masks"][0, 2], again["masks"][0])

    no_locals = SereViews(**{**SMALL_SERE, "local_crops": 0})(img, random.Random(0), 0)
    assert no_locals["local_crops"].shape == (0, 3, 16, 16) and no_locals["local_boxes"].shape == (
        0,
        5,
    )
    assert collate_views([no_locals, no_locals])["local_crops"].shape == (0, 2, 3, 16, 16)


def test_eval_view_and_dataset_keys(digits_root: Path) -> None:
    img = torch.from_numpy(_noise(50, 80, 2)).permute(2, 0, 1).contiguous()
    out = EvalView(size=32, crop_pct=0.875)(img)
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.uint8
    ds = ImageFolderDataset(digits_root / "val", EvalView(size=16, crop_pct=1.0))
    sample = ds[5]
    assert set(sample) == {"image", "label", "index", "num_replaced"}
    assert sample["label"] == int(ds.targets[5]) and sample["index"] == 5
    # crop_pct 1 on a square 16 px image is the identity.
    raw = ImageFolderDataset(digits_root / "val", None)[5]["image"]
    assert torch.equal(sample["image"], raw)


def test_blur_kernel_size() -> None:
    assert blur_kernel_size(224) == 23  # BYOL's kernel
    assert blur_kernel_size(96) == 13  # +-3 sigma_max for sigma_max = 2
    assert all(blur_kernel_size(s) % 2 == 1 for s in range(8, 400))


# ------------------------------------------------------------------------------------------------
# Determinism
# ------------------------------------------------------------------------------------------------


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_same_seed_epoch_index_same_views(digits_root: Path) -> None:
    ds = ImageFolderDataset(digits_root / "train", SereViews(**SMALL_SERE), seed=3)
    ds.set_epoch(2)
    first = ds[10]
    other = ImageFolderDataset(digits_root / "train", SereViews(**SMALL_SERE), seed=3)
    other.set_epoch(2)
    _ = other[11]  # reading another sample first must not matter
    assert _same(first, other[10])
    assert _same(first, ds[(2, 10)])  # (epoch, index) items for persistent workers
    assert not torch.equal(first["global_crops"], ds[(3, 10)]["global_crops"])  # other epoch
    assert not torch.equal(first["global_boxes"], ds[11]["global_boxes"])  # other index
    reseeded = ImageFolderDataset(digits_root / "train", SereViews(**SMALL_SERE), seed=4)
    reseeded.set_epoch(2)
    assert not torch.equal(first["global_boxes"], reseeded[10]["global_boxes"])  # other run seed
    assert sample_seeds(0, 1, 2) != sample_seeds(0, 2, 1)


def test_global_rng_state_untouched(digits_root: Path) -> None:
    ds = ImageFolderDataset(digits_root / "train", CareViews(size=16), seed=0)
    torch.manual_seed(1234)
    random.seed(99)
    torch_state = torch.get_rng_state()
    py_state = random.getstate()
    ds[0]
    ds[1]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state


def test_dataloader_workers_and_resume_give_identical_batches(digits_root: Path) -> None:
    ds = ImageFolderDataset(digits_root / "train", SereViews(**SMALL_SERE), seed=5)
    ds.set_epoch(1)
    order = list(range(0, 60, 3))

    def batches(num_workers: int, indices: list[int]) -> list[dict]:
        loader = DataLoader(
            ds, batch_size=4, sampler=indices, num_workers=num_workers, collate_fn=collate_views
        )
        return list(loader)

    serial = batches(0, order)
    parallel = batches(2, order)
    assert len(serial) == len(parallel) == 5
    for a, b in zip(serial, parallel):
        assert _same(a, b)
    # Resume after two batches (as a restarted job would): the remaining batches are unchanged.
    resumed = batches(2, order[8:])
    for a, b in zip(serial[2:], resumed):
        assert _same(a, b)
    # Another "rank" reading the same index inside a different batch gets the same views.
    shuffled = batches(0, [order[5], 1, 2, 4])
    assert torch.equal(shuffled[0]["global_crops"][:, 0], serial[1]["global_crops"][:, 1])


# ------------------------------------------------------------------------------------------------
# Decoding: colour modes and unreadable files
# ------------------------------------------------------------------------------------------------


def test_grayscale_and_rgba_become_rgb(tmp_path: Path) -> None:
    gray = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    _write(tmp_path / "a" / "gray.png", gray)
    rgba = np.dstack([_noise(12, 14, 3), np.full((12, 14), 77, np.uint8)])
    _write(tmp_path / "b" / "rgba.png", rgba, mode="RGBA")
    _write(tmp_path / "b" / "rgb.jpg", _noise(10, 10, 4))
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


@pytest.fixture()
def folder_with_corrupt_files(tmp_path: Path) -> Path:
    _write(tmp_path / "cat" / "0.png", _noise(16, 16, 10))
    (tmp_path / "cat" / "1.jpg").write_bytes(b"this is not a JPEG file" * 20)  # garbage
    png = tmp_path / "cat" / "2.png"
    _write(png, _noise(40, 40, 11))
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])  # truncated
    _write(tmp_path / "cat" / "3.png", _noise(16, 18, 12))
    _write(tmp_path / "dog" / "4.png", _noise(20, 16, 13))
    (tmp_path / "dog" / "notes.txt").write_text("ignored: not an image extension")
    return tmp_path


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
    _write(tmp_path / "flat.png", _noise(4, 4, 0))  # images directly under root: wrong layout
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        ImageFolderDataset(tmp_path, None)


# ------------------------------------------------------------------------------------------------
# SERE crop boxes
# ------------------------------------------------------------------------------------------------


def test_sere_boxes_match_crops() -> None:
    height, width = 180, 240
    img = torch.zeros(3, height, width, dtype=torch.uint8)
    img[0] = torch.arange(width, dtype=torch.uint8)[None, :]  # red encodes x
    img[1] = torch.arange(height, dtype=torch.uint8)[:, None]  # green encodes y
    plain = dict(
        jitter_p=0.0,
        grayscale_p=0.0,
        global_blur_p=(0.0, 0.0),
        local_blur_p=0.0,
        global_solarize_p=(0.0, 0.0),
    )
    views = SereViews(global_size=32, local_size=16, patch_size=8, local_crops=6, **plain)
    flips = set()
    for seed in range(6):
        out = views(img, random.Random(seed), 0)
        crops = list(out["global_crops"]) + list(out["local_crops"])
        boxes = torch.cat([out["global_boxes"], out["local_boxes"]]).tolist()
        for crop, (x0, y0, w, h, flip) in zip(crops, boxes):
            assert 0 <= x0 and x0 + w <= width and 0 <= y0 and y0 + h <= height
            side = crop.shape[-1]
            cols = crop[0].double().mean(0)  # red per output column
            rows = crop[1].double().mean(1)  # green per output row
            if flip:
                cols = cols.flip(0)
            flips.add(flip)
            # Output pixel j samples the source at x0 + (j + 0.5) * w / side - 0.5.
            step_x, step_y = w / side, h / side
            tol_x, tol_y = 0.5 * step_x + 1.5, 0.5 * step_y + 1.5
            assert abs(cols[0].item() - (x0 + 0.5 * step_x - 0.5)) <= tol_x
            assert abs(cols[-1].item() - (x0 + w - 0.5 * step_x - 0.5)) <= tol_x
            assert abs(rows[0].item() - (y0 + 0.5 * step_y - 0.5)) <= tol_y
            assert abs(rows[-1].item() - (y0 + h - 0.5 * step_y - 0.5)) <= tol_y
            assert abs(cols.mean().item() - (x0 + w / 2 - 0.5)) <= 1.0
    assert flips == {0.0, 1.0}


def test_crop_box_fallback_and_range() -> None:
    # An impossible scale forces the centre-crop fallback with the aspect clamped into (3/4, 4/3).
    assert sample_crop_box(random.Random(0), 100, 400, scale=(2.0, 3.0)) == (133, 0, 133, 100)
    assert sample_crop_box(random.Random(0), 100, 110, scale=(2.0, 3.0)) == (0, 0, 110, 100)
    rng = random.Random(1)
    for _ in range(200):
        x0, y0, w, h = sample_crop_box(rng, 50, 70, scale=(0.05, 0.4))
        assert 0 <= x0 <= 70 - w and 0 <= y0 <= 50 - h and w > 0 and h > 0
        assert w * h <= 0.4 * 50 * 70 * 1.1  # rounding slack


# ------------------------------------------------------------------------------------------------
# Masks
# ------------------------------------------------------------------------------------------------


def test_block_mask_properties() -> None:
    rng = random.Random(0)
    g = 14
    for ratio in (0.1, 0.2, 0.3, 0.4, 0.5):
        target = ratio * g * g
        counts = []
        for _ in range(60):
            mask = block_mask(rng, g, g, target)
            assert mask.shape == (g, g) and mask.dtype == torch.bool
            count = int(mask.sum())
            assert count <= target
            counts.append(count)
            # Each block has h < H and w < W, so no accepted block spans a whole row or column;
            # with at most 50 % masked, the full grid is never covered.
            assert count < g * g
        # The budget loop stops only when 10 attempts fail, so it gets close to T on average.
        assert np.mean(counts) >= 0.85 * target, (ratio, np.mean(counts))
    assert not block_mask(rng, g, g, 0.0).any()


def test_block_mask_single_block_matches_spec_draws() -> None:
    # Replay the spec's draws for the first block and check it lands where they say.
    for seed in range(20):
        rng = random.Random(seed)
        replay = random.Random(seed)
        target = 30.0
        mask = block_mask(rng, 14, 14, target)
        area = replay.uniform(16, target)
        aspect = np.exp(replay.uniform(np.log(0.3), np.log(1 / 0.3)))
        h, w = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if w < 14 and h < 14 and 0 < h * w <= target:
            top, left = replay.randint(0, 14 - h), replay.randint(0, 14 - w)
            assert mask[top : top + h, left : left + w].all()


def test_random_mask_exact_count() -> None:
    rng = random.Random(0)
    for target in (0.0, 0.9, 7.3, 58.8, 196.0):
        mask = random_mask(rng, 14, 14, target)
        assert mask.shape == (14, 14) and int(mask.sum()) == int(target)


def test_sere_mask_ratio_schedule() -> None:
    views = SereViews(
        global_size=56, local_size=16, patch_size=4, local_crops=0, pred_start_epoch=2
    )
    rng = random.Random(0)
    ratios = [views.mask_ratio(rng, epoch=5) for _ in range(2000)]
    zeros = sum(r == 0 for r in ratios)
    assert 850 < zeros < 1150  # half the candidates are the (0, 0) pair
    assert all(0.1 <= r <= 0.5 for r in ratios if r != 0)
    img = torch.from_numpy(_noise(64, 64, 5)).permute(2, 0, 1).contiguous()
    early = [views(img, random.Random(s), 1)["masks"] for s in range(10)]
    assert not any(m.any() for m in early)  # before pred_start_epoch
    late = torch.stack([views(img, random.Random(s), 2)["masks"] for s in range(20)])
    assert late.any() and late.shape == (20, 2, 14, 14)
    assert (late.flatten(2).sum(-1) <= 0.5 * 196).all()
    rand = SereViews(
        global_size=56,
        local_size=16,
        patch_size=4,
        local_crops=0,
        pred_ratio=0.25,
        pred_ratio_var=0.0,
        pred_shape="rand",
    )
    assert (rand(img, random.Random(0), 0)["masks"].flatten(1).sum(-1) == 49).all()
    with pytest.raises(ValueError, match="multiple of patch_size"):
        SereViews(global_size=30, patch_size=16)


# ------------------------------------------------------------------------------------------------
# Embedded digits
# ------------------------------------------------------------------------------------------------


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


def test_fingerprint_changes_with_the_folder_content(tmp_path: Path) -> None:
    for c in ("a", "b"):
        for i in range(3):
            _write(tmp_path / c / f"{i}.png", _noise(8, 8, i))
    first = ImageFolderDataset(tmp_path, None).fingerprint()
    assert ImageFolderDataset(tmp_path, None).fingerprint() == first  # stable across scans
    _write(tmp_path / "b" / "3.png", _noise(8, 8, 3))
    added = ImageFolderDataset(tmp_path, None).fingerprint()
    assert added != first
    os.remove(tmp_path / "b" / "3.png")
    assert ImageFolderDataset(tmp_path, None).fingerprint() == first
    os.remove(tmp_path / "a" / "0.png")
    assert ImageFolderDataset(tmp_path, None).fingerprint() not in (first, added)
