"""Image folders in ImageNet layout (``root/<class>/<image>``), decoded to uint8 RGB tensors.

Decoding differs from the official PIL pipelines in two details:

* RGB conversion: ``ImageReadMode.RGB`` drops an alpha channel without compositing (PIL's
  ``convert('RGB')`` does the same) and replicates grayscale. EXIF orientation is not applied, as
  with the official ``PIL.Image.open``.
* torchvision 0.29 deprecates its image codecs (``torchvision.io.decode_image`` emits a
  ``DeprecationWarning`` per call, hidden by Python's default filters) in favour of TorchCodec;
  decoding is isolated in ``ImageFolderDataset._decode`` so that it can be swapped later.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from selfsup_zoo.training.data.seeding import sample_seeds, seeded_torch

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "CorruptImageError",
    "ImageFolderDataset",
    "ViewTransform",
    "image_folder_classes",
]

#: File name endings accepted by :class:`ImageFolderDataset` (case-insensitive): the formats that
#: ``torchvision.io.decode_image`` reads on every platform.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".gif")


class ViewTransform(Protocol):
    """What :class:`ImageFolderDataset` calls: ``uint8[3,H,W]`` image, the sample's Python RNG and
    the epoch (torch's CPU generator is already seeded for the sample) -> dict of outputs."""

    def __call__(self, img: torch.Tensor, rng: random.Random, epoch: int) -> dict[str, Any]: ...


class CorruptImageError(RuntimeError):
    """An image file could not be read or decoded (``strict=True``)."""


def image_folder_classes(root: str | os.PathLike[str]) -> list[str]:
    """Class names of an image folder, in label order.

    Args:
        root: The image folder.

    Returns:
        Its sorted, non-hidden sub-folder names (label = position).
    """
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_image_folder(root: Path) -> tuple[list[str], list[bytes], list[int]]:
    layout = (
        f"expected ImageNet layout {root}/<class>/<image> "
        f"with extensions {', '.join(IMAGE_EXTENSIONS)}"
    )
    if not root.exists():
        raise FileNotFoundError(f"data root {root} does not exist ({layout})")
    if not root.is_dir():
        raise NotADirectoryError(f"data root {root} is not a directory ({layout})")
    classes = image_folder_classes(root)
    if not classes:
        raise FileNotFoundError(f"no class folders in {root} ({layout})")
    files: list[bytes] = []
    targets: list[int] = []
    skipped = 0
    for label, name in enumerate(classes):
        # Recursive and sorted like torchvision's ImageFolder, so indices are stable across runs.
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, root)  # once per folder, not per file (ImageNet: 1.28M)
            for fname in sorted(filenames):
                if fname.startswith("."):
                    continue
                if not fname.lower().endswith(IMAGE_EXTENSIONS):
                    skipped += 1
                    continue
                files.append(os.fsencode(os.path.join(rel, fname)))
                targets.append(label)
    if not files:
        raise FileNotFoundError(
            f"no image files under the {len(classes)} class folders of {root} ({layout})"
        )
    if skipped:
        logger.info("ignored %d files without an image extension under %s", skipped, root)
    return classes, files, targets


class ImageFolderDataset(Dataset):
    """Images under ``root/<class>/<image>`` (ImageNet layout), decoded to ``uint8[3,H,W]`` RGB.

    Classes are the sorted sub-folder names (label = position); files are sorted and may sit in
    nested folders. ``transform(img, rng, epoch)`` runs inside the per-sample seeding
    (:mod:`selfsup_zoo.training.data.seeding`); a ``None`` transform returns the decoded image as
    ``"image"``.

    Each sample is the transform's dict plus ``"label"`` (class of the image actually returned),
    ``"index"`` (the requested index) and ``"num_replaced"`` (1 if the requested file was
    unreadable and replaced, else 0). The item may be an ``int`` (uses the epoch of
    :meth:`set_epoch`) or an ``(epoch, index)`` pair; the latter lets a sampler carry the epoch to
    persistent DataLoader workers, which keep the copy of the dataset they were started with.

    Unreadable files: with ``strict`` a :class:`CorruptImageError` names the file. Otherwise a
    warning is logged once per file (per process) and the next readable file (index + 1, + 2, ...
    modulo N) is returned, augmented with the *requested* index's seed, so batch shapes never change
    and the substitution is deterministic.

    Paths are kept in a numpy byte array rather than a list of ``str`` so that forked DataLoader
    workers do not copy the (ImageNet-sized) list through reference-count writes.

    Args:
        root: The image folder.
        transform: The view transform, or ``None`` for the decoded ``uint8[3, H, W]`` image.
        seed: The run's data seed (see :func:`~selfsup_zoo.training.data.seeding.sample_seeds`).
        strict: Raise :class:`CorruptImageError` on an unreadable file instead of replacing it.

    Raises:
        FileNotFoundError: ``root`` is missing, has no class folders or no image files.
        NotADirectoryError: ``root`` is a file.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: ViewTransform | None,
        *,
        seed: int = 0,
        strict: bool = False,
    ) -> None:
        self.root = Path(root).expanduser()
        self.transform = transform
        self.seed = int(seed)
        self.strict = bool(strict)
        self.epoch = 0
        classes, files, targets = _scan_image_folder(self.root)
        self.classes: list[str] = classes
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(classes)}
        self._files = np.array(files, dtype=np.bytes_)
        self.targets = np.asarray(targets, dtype=np.int64)
        self._bad: set[int] = set()
        logger.info(
            "image folder %s: %d images, %d classes", self.root, len(self._files), len(classes)
        )

    def __len__(self) -> int:
        return len(self._files)

    def fingerprint(self) -> str:
        """sha256 over the class names and, per image, its relative path and size in bytes.

        Identifies the folder's content cheaply (one ``stat`` per file, no reads): adding,
        removing, renaming or rewriting an image to another size changes it. Used to refuse a
        resume on a changed data set and to key cached features.
        """
        digest = hashlib.sha256()
        digest.update("\0".join(self.classes).encode("utf-8") + b"\1")
        for rel in self._files:
            name = bytes(rel)
            size = os.stat(self.root / os.fsdecode(name)).st_size
            digest.update(name + b"\0" + str(size).encode("ascii") + b"\1")
        return digest.hexdigest()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random views ``dataset[index]`` returns."""
        self.epoch = int(epoch)

    def path(self, index: int) -> Path:
        """Path of image ``index``: ``root`` joined with its path relative to ``root``."""
        return self.root / os.fsdecode(bytes(self._files[index]))

    @staticmethod
    def _decode(path: Path) -> torch.Tensor:
        img: torch.Tensor = decode_image(str(path), mode=ImageReadMode.RGB)
        if img.ndim == 4:  # animated GIF: keep the first frame
            img = img[0]
        if img.dtype != torch.uint8:  # 16-bit PNG
            img = TF.to_dtype(img, torch.uint8, scale=True)
        if img.shape[0] != 3 or img.shape[1] == 0 or img.shape[2] == 0:
            raise RuntimeError(f"decoded to an unusable shape {tuple(img.shape)}")
        return img

    def _load(self, index: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        for step in range(n):
            j = (index + step) % n
            if j in self._bad:
                continue
            path = self.path(j)
            try:
                return self._decode(path), j
            except (RuntimeError, OSError, ValueError) as err:
                if self.strict:
                    raise CorruptImageError(
                        f"cannot read image {path}: {err}. Remove or fix the file, or pass "
                        "strict=False to skip unreadable files (each is replaced by the next "
                        "readable image)"
                    ) from err
                self._bad.add(j)
                logger.warning(
                    "skipping unreadable image %s (%s); substituting the next readable image",
                    path,
                    err,
                )
        raise RuntimeError(f"none of the {n} images under {self.root} could be decoded")

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """Sample ``item``: an index (epoch of :meth:`set_epoch`) or an ``(epoch, index)`` pair.

        Returns:
            The transform's outputs plus ``"label"``, ``"index"`` and ``"num_replaced"``.
        """
        if isinstance(item, (tuple, list)):
            epoch, index = int(item[0]), int(item[1])
        else:
            epoch, index = self.epoch, int(item)
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        img, used = self._load(index)
        py_seed, torch_seed = sample_seeds(self.seed, epoch, index)
        if self.transform is None:
            out: dict[str, Any] = {"image": img}
        else:
            rng = random.Random(py_seed)
            with seeded_torch(torch_seed):
                out = dict(self.transform(img, rng, epoch))
        out["label"] = int(self.targets[used])
        out["index"] = index
        out["num_replaced"] = int(used != index)
        return out
