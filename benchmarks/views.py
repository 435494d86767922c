"""View pipelines, JPEG file on disk -> the tensors the step consumes, in one worker (one thread).

The images are synthetic JPEGs of ImageNet's typical size (500 x 375, quality 90), written once
into a temporary folder in ImageNet layout, so that both implementations read the same files.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfsup_zoo.training.data.care_views import CareViews
from selfsup_zoo.training.data.dataset import ImageFolderDataset
from selfsup_zoo.training.data.sere_views import SereViews

from .timing import Prepared

__all__ = [
    "FOLDER_IMAGES",
    "IMAGES_PER_CALL",
    "jpeg_folder",
    "prepare_care_views",
    "prepare_sere_views",
]

#: Images one timed call processes (a call is short; several images smooth out the timer).
IMAGES_PER_CALL = 8
#: Images in the runner's JPEG folder (the view cases cycle through it).
FOLDER_IMAGES = 32


def jpeg_folder(root: Path, count: int, size: tuple[int, int] = (500, 375)) -> Path:
    """A folder ``root/jpegs/<class>/<i>.jpg`` of ``count`` smooth random JPEGs (made once).

    Args:
        root: Parent folder (the runner's temporary folder).
        count: Number of images.
        size: ``(width, height)`` of each image.

    Returns:
        The dataset root (``root/jpegs``).
    """
    folder = root / "jpegs"
    cls = folder / "n0"
    if cls.is_dir() and len(list(cls.glob("*.jpg"))) == count:
        return folder
    cls.mkdir(parents=True, exist_ok=True)
    rs = np.random.RandomState(0)
    for i in range(count):
        coarse = (rs.rand(size[1] // 8 + 1, size[0] // 8 + 1, 3) * 255).astype(np.uint8)
        img = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
        img.save(cls / f"{i}.jpg", quality=90)
    return folder


def _cycle(ds: ImageFolderDataset) -> Prepared:
    order = [0]

    def call() -> None:
        for _ in range(IMAGES_PER_CALL):
            ds[order[0] % len(ds)]
            order[0] += 1

    return Prepared(call, IMAGES_PER_CALL)


def prepare_care_views(folder: Path, setting: str, quick: bool) -> Prepared:
    """Our CARE pipeline: decode once, two uint8 views (:class:`CareViews`).

    Args:
        folder: Dataset root from :func:`jpeg_folder`.
        setting: ``official`` (the eager kernels) or ``best`` (``compile_hue``, as the ImageNet
            recipes run it; the same views).
        quick: 32 px views.

    Returns:
        One call = :data:`IMAGES_PER_CALL` images.
    """
    torch.set_num_threads(1)
    random.seed(0)
    views = CareViews(size=32 if quick else 224, compile_hue=setting == "best")
    views.warm_up()
    return _cycle(ImageFolderDataset(folder, views, seed=0))


def prepare_sere_views(folder: Path, setting: str, quick: bool) -> Prepared:
    """Our SERE pipeline: 2 global + 10 local uint8 crops, boxes and masks (:class:`SereViews`;
    ``setting`` as in :func:`prepare_care_views`)."""
    torch.set_num_threads(1)
    sizes = dict(global_size=32, local_size=16, local_crops=2) if quick else {}
    views = SereViews(**sizes, compile_hue=setting == "best")  # type: ignore[arg-type]
    views.warm_up()
    return _cycle(ImageFolderDataset(folder, views, seed=0))
