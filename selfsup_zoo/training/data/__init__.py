"""Data pipeline for pre-training and evaluation: image folders, CARE/SERE views, collation.

Images are decoded with ``torchvision.io.decode_image`` and augmented as **uint8 tensors** with
``torchvision.transforms.v2``; every view stays uint8 (4x less host memory and host-to-device
traffic than float32). The engine converts to float and normalises on the device
(:func:`normalize_uint8`).

A view transform is any callable ``transform(img, rng, epoch) -> dict`` with ``img`` a
``uint8[3, H, W]`` tensor (:class:`ViewTransform`); :class:`CareViews`, :class:`SereViews` and
:class:`EvalView` are the three provided. :class:`ImageFolderDataset` calls it with per-sample
seeded generators, so a sample's views depend only on ``(seed, epoch, index)``;
:func:`collate_views` batches the dictionaries with the view dimension first.

Modules:

* ``seeding``: per-sample seeds and the seeded torch generator (resume-exactness, worker
  invariance);
* ``crops``: random-resized-crop boxes and resampling modes;
* ``photometric``: colour jitter, grayscale, blur and solarize of one view, the blur kernel size;
* ``masking``: iBOT block and random patch masks;
* ``care_views``, ``sere_views``, ``eval_view``: the view transforms; ``views``: the registry
  that a recipe's ``data.views`` names;
* ``dataset``: image-folder scan and :class:`ImageFolderDataset`;
* ``collate``: batching and normalisation;
* ``embedded``: materialised embedded data sets (digits) and the data cache folder.

Each module's docstring lists where it differs from the official PIL pipelines (CARE
``data/transforms.py``, SERE/iBOT ``DataAugmentationiBOT``).
"""

from __future__ import annotations

from selfsup_zoo.training.data.care_views import CareViews
from selfsup_zoo.training.data.collate import VIEW_FIRST_KEYS, collate_views, normalize_uint8
from selfsup_zoo.training.data.crops import interpolation_mode, sample_crop_box
from selfsup_zoo.training.data.dataset import (
    IMAGE_EXTENSIONS,
    CorruptImageError,
    ImageFolderDataset,
    ViewTransform,
    image_folder_classes,
)
from selfsup_zoo.training.data.embedded import (
    data_cache_dir,
    default_cache_dir,
    materialize_digits,
    resolve_data_root,
)
from selfsup_zoo.training.data.eval_view import EvalView
from selfsup_zoo.training.data.masking import block_mask, random_mask
from selfsup_zoo.training.data.photometric import blur_kernel_size
from selfsup_zoo.training.data.seeding import sample_seeds
from selfsup_zoo.training.data.sere_views import SereViews
from selfsup_zoo.training.data.views import VIEWS, build_views

# The name this helper had when the package was one module (data.py); tests still import it.
_interp = interpolation_mode

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIEW_FIRST_KEYS",
    "CareViews",
    "CorruptImageError",
    "EvalView",
    "ImageFolderDataset",
    "SereViews",
    "VIEWS",
    "ViewTransform",
    "block_mask",
    "blur_kernel_size",
    "build_views",
    "collate_views",
    "data_cache_dir",
    "default_cache_dir",
    "image_folder_classes",
    "materialize_digits",
    "normalize_uint8",
    "random_mask",
    "resolve_data_root",
    "sample_crop_box",
    "sample_seeds",
]
