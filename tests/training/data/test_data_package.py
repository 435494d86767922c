"""The package ``selfsup_zoo.training.data`` keeps every name the single module data.py had."""

from __future__ import annotations

import importlib

from selfsup_zoo.training import data as sdata

# Public names of data.py before it became a package, and where each lives now.
_HOMES = {
    "IMAGE_EXTENSIONS": "dataset",
    "VIEW_FIRST_KEYS": "collate",
    "CareViews": "care_views",
    "CorruptImageError": "dataset",
    "EvalView": "eval_view",
    "ImageFolderDataset": "dataset",
    "SereViews": "sere_views",
    "VIEWS": "views",
    "ViewTransform": "dataset",
    "block_mask": "masking",
    "blur_kernel_size": "photometric",
    "build_views": "views",
    "collate_views": "collate",
    "data_cache_dir": "embedded",
    "default_cache_dir": "embedded",
    "image_folder_classes": "dataset",
    "materialize_digits": "embedded",
    "normalize_uint8": "collate",
    "random_mask": "masking",
    "resolve_data_root": "embedded",
    "sample_crop_box": "crops",
    "sample_seeds": "seeding",
}


def test_every_name_of_the_old_module_resolves_from_the_package() -> None:
    assert sorted(sdata.__all__) == sorted(_HOMES)
    for name, module in _HOMES.items():
        home = importlib.import_module(f"selfsup_zoo.training.data.{module}")
        assert getattr(sdata, name) is getattr(home, name), name
        assert name in home.__all__, name
    crops = importlib.import_module("selfsup_zoo.training.data.crops")
    assert sdata._interp is crops.interpolation_mode  # imported by name elsewhere
