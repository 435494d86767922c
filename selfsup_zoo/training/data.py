"""Data pipeline for pre-training and evaluation: image folders, CARE/SERE views, collation.

Design
------
* Images are decoded with ``torchvision.io.decode_image`` and augmented as **uint8 tensors** with
  ``torchvision.transforms.v2``; every view stays uint8 (4x less host memory and host-to-device
  traffic than float32). The engine converts to float and normalises on the device.
* **Per-sample deterministic randomness.** Every random draw made for sample ``index`` in epoch
  ``epoch`` comes from seeds derived by hashing ``(seed, epoch, index)`` (:func:`sample_seeds`):
  Python-level draws (crop boxes, flips, blur, solarize, masks) use a private
  ``random.Random``; the v2 transforms, which draw from torch's global CPU generator (colour
  jitter, grayscale), run inside ``torch.random.fork_rng(devices=[])`` after re-seeding that
  generator. Hence a sample's views do not depend on the number of DataLoader workers, on the world
  size, on the order in which samples are read or on a resume in the middle of an epoch, and the
  caller's RNG state is left untouched. (The official loaders seed per process, so their streams
  differ per rank and per worker; see sere.md §8 #17.)
* A view transform is any callable ``transform(img, rng, epoch) -> dict`` with ``img`` a
  ``uint8[3, H, W]`` tensor; :class:`CareViews`, :class:`SereViews` and :class:`EvalView` are the
  three provided. :func:`collate_views` batches their dictionaries with the view dimension first.

Differences from the official PIL pipelines (CARE ``data/transforms.py``, SERE/iBOT
``DataAugmentationiBOT``), all on uint8 tensors:

* Resizing uses torchvision's antialiased bilinear/bicubic kernels, which emulate PIL's resampling
  (differences of about one grey level from rounding).
* Gaussian blur: PIL's ``GaussianBlur(radius=sigma)`` picks its own support; torchvision needs a
  kernel size. We use an odd kernel of about 10 % of the output side (23 px at 224, BYOL's value),
  enlarged where needed to cover +-3 sigma_max (13 px for sigma_max = 2), so that small crops (96 px
  locals, smoke-test sizes) are not truncated at 2 sigma. sigma ~ U(0.1, 2.0) as officially.
* Colour jitter / grayscale: torchvision's tensor kernels (ITU-R 601 luma, hue through float HSV)
  instead of PIL's integer arithmetic; same parameters, same random order of the four jitter ops.
* Solarize: ``v2.functional.solarize(threshold=128)`` inverts values >= 128, exactly like
  ``PIL.ImageOps.solarize(threshold=128)``.
* RGB conversion: ``ImageReadMode.RGB`` drops an alpha channel without compositing (PIL's
  ``convert('RGB')`` does the same) and replicates grayscale. EXIF orientation is not applied, as
  with the official ``PIL.Image.open``.
* torchvision 0.29 deprecates its image codecs (``torchvision.io.decode_image`` emits a
  ``DeprecationWarning`` per call, hidden by Python's default filters) in favour of TorchCodec;
  decoding is isolated in ``ImageFolderDataset._decode`` so that it can be swapped later.
* Random streams are not bit-identical to the official loaders (different generators and seeding),
  which does not matter for loss parity on given inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from selfsup_zoo._io import atomic_write_text

logger = logging.getLogger(__name__)

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
    "materialize_digits",
    "random_mask",
    "resolve_data_root",
    "sample_crop_box",
    "sample_seeds",
]

#: File name endings accepted by :class:`ImageFolderDataset` (case-insensitive): the formats that
#: ``torchvision.io.decode_image`` reads on every platform.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".gif")

#: Keys whose per-sample tensors carry a leading view dimension; :func:`collate_views` stacks them
#: as ``[V, B, ...]`` so that ``batch[key][v]`` is the batch of view ``v``.
VIEW_FIRST_KEYS: frozenset[str] = frozenset(
    {"global_crops", "local_crops", "masks", "global_boxes", "local_boxes"}
)

_IMAGENET_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_DIGITS_COUNT = 1797  # images in scikit-learn's digits set (a fixed, shipped file)


# --------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------


def sample_seeds(seed: int, epoch: int, index: int) -> tuple[int, int]:
    """Two independent 63-bit seeds (Python ``random``, torch generator) for one sample.

    A cryptographic hash rather than arithmetic (``seed + epoch * N + index``) so that neighbouring
    samples/epochs get unrelated streams and no two ``(epoch, index)`` pairs collide.
    """
    digest = hashlib.blake2b(
        f"{int(seed)}:{int(epoch)}:{int(index)}".encode(), digest_size=16, person=b"selfsupzoo-data"
    ).digest()
    mask = (1 << 63) - 1
    return int.from_bytes(digest[:8], "little") & mask, int.from_bytes(digest[8:], "little") & mask


@contextlib.contextmanager
def _seeded_torch(torch_seed: int) -> Iterator[None]:
    """Run a block with torch's CPU generator re-seeded, restoring the caller's state afterwards.

    ``torch.default_generator.manual_seed`` rather than ``torch.manual_seed``: the latter also
    re-seeds every CUDA generator, which ``fork_rng(devices=[])`` would not restore.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(torch_seed)
        yield


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------


def sample_crop_box(
    rng: random.Random,
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float] = _IMAGENET_RATIO,
) -> tuple[int, int, int, int]:
    """Random-resized-crop box ``(x0, y0, w, h)`` in image pixels, torchvision's algorithm.

    Ten attempts of area fraction ~ U(scale) and log-aspect ~ U(log ratio); the first box that fits
    is placed uniformly. Otherwise the fallback is the largest centred box whose aspect is clamped
    into ``ratio``. Drawn from ``rng`` (Python ``random``, as SERE's overlap-aware crop) so that the
    box is known exactly for the overlap grids (sere.md §3.7).
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y0 = rng.randint(0, height - h)
            x0 = rng.randint(0, width - w)
            return x0, y0, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def blur_kernel_size(side: int, sigma_max: float = 2.0) -> int:
    """Odd Gaussian kernel size for an output of ``side`` pixels.

    About 10 % of the side (BYOL: 23 px at 224), but at least ``2*ceil(3*sigma_max)+1`` so that the
    kernel reaches +-3 sigma like PIL's blur, whose support is not tied to the image size.
    """
    k = max(int(0.1 * side), 2 * math.ceil(3.0 * sigma_max) + 1, 3)
    return k if k % 2 == 1 else k + 1


def _interp(name: str | InterpolationMode) -> InterpolationMode:
    return name if isinstance(name, InterpolationMode) else InterpolationMode(name.lower())


# --------------------------------------------------------------------------------------------
# Photometric pipeline shared by CARE and SERE views
# --------------------------------------------------------------------------------------------


class _Photometric:
    """One view's colour pipeline; which generator each draw uses mirrors the official code.

    Jitter (applied with ``jitter_p``) and grayscale draw from torch's generator (torchvision's
    ``RandomApply``/``RandomGrayscale`` in the official code too); blur and solarize probabilities
    and sigma from the Python ``rng`` (the official ``GaussianBlur``/``Solarization`` classes use
    Python ``random``).
    """

    def __init__(
        self,
        side: int,
        jitter: Sequence[float],
        jitter_p: float,
        grayscale_p: float,
        blur_p: float,
        solarize_p: float,
        sigma: Sequence[float],
        blur_kernel: int | None,
    ) -> None:
        b, c, s, h = jitter
        self.jitter = v2.RandomApply([v2.ColorJitter(b, c, s, h)], p=jitter_p)
        self.jitter_p = jitter_p
        self.gray = v2.RandomGrayscale(p=grayscale_p)
        self.grayscale_p = grayscale_p
        self.blur_p = blur_p
        self.solarize_p = solarize_p
        self.sigma = (float(sigma[0]), float(sigma[1]))
        self.kernel = (
            blur_kernel if blur_kernel is not None else blur_kernel_size(side, self.sigma[1])
        )
        if self.kernel % 2 != 1:
            raise ValueError(f"blur kernel size must be odd, got {self.kernel}")

    # Each op skips its transform object entirely at p == 0, so that a disabled op does not even
    # consume torch draws (keeps test configurations with photometrics off exact).
    def colour_jitter(self, img: torch.Tensor) -> torch.Tensor:
        return self.jitter(img) if self.jitter_p > 0 else img

    def grayscale(self, img: torch.Tensor) -> torch.Tensor:
        return self.gray(img) if self.grayscale_p > 0 else img

    def colour(self, img: torch.Tensor) -> torch.Tensor:
        """Jitter then grayscale (the DINO/iBOT order; CARE puts the blur in between)."""
        return self.grayscale(self.colour_jitter(img))

    def blur(self, img: torch.Tensor, rng: random.Random) -> torch.Tensor:
        if self.blur_p > 0 and rng.random() < self.blur_p:
            sigma = rng.uniform(*self.sigma)
            img = TF.gaussian_blur(img, [self.kernel, self.kernel], [sigma, sigma])
        return img

    def solarize(self, img: torch.Tensor, rng: random.Random) -> torch.Tensor:
        if self.solarize_p > 0 and rng.random() < self.solarize_p:
            img = TF.solarize(img, threshold=128)
        return img


class ViewTransform(Protocol):
    """What :class:`ImageFolderDataset` calls: ``uint8[3,H,W]`` image, the sample's Python RNG and
    the epoch (torch's CPU generator is already seeded for the sample) -> dict of outputs."""

    def __call__(self, img: torch.Tensor, rng: random.Random, epoch: int) -> dict[str, Any]: ...


def _as_pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if len(value) != 2:
        raise ValueError(f"{name} needs one value per global view (2), got {value!r}")
    return float(value[0]), float(value[1])


# --------------------------------------------------------------------------------------------
# CARE: BYOL asymmetric pair (care.md §4.1)
# --------------------------------------------------------------------------------------------


class CareViews:
    """BYOL's asymmetric two-view augmentation as used by CARE (care.md §4.1).

    Per view, in the official order: random resized crop (``scale``, aspect (3/4, 4/3), bilinear,
    antialiased) -> ColorJitter(0.4, 0.4, 0.2, 0.1) with p 0.8 -> Gaussian blur (p 1.0 / 0.1,
    sigma ~ U(0.1, 2)) -> grayscale p 0.2 -> horizontal flip p 0.5 -> solarize (threshold 128,
    p 0.0 / 0.2). The crop box and flip are drawn from the Python RNG (the official code uses
    torch's through torchvision; only the stream differs, not the distribution).

    Returns ``{"x1": uint8[3,S,S], "x2": uint8[3,S,S]}``.
    """

    def __init__(
        self,
        size: int = 224,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = _IMAGENET_RATIO,
        *,
        jitter: Sequence[float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: float | Sequence[float] = (1.0, 0.1),
        solarize_p: float | Sequence[float] = (0.0, 0.2),
        flip_p: float = 0.5,
        sigma: Sequence[float] = (0.1, 2.0),
        blur_kernel: int | None = None,
        interpolation: str | InterpolationMode = "bilinear",
    ) -> None:
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.flip_p = float(flip_p)
        self.interpolation = _interp(interpolation)
        blur = _as_pair(blur_p, "blur_p")
        sol = _as_pair(solarize_p, "solarize_p")
        self.views = [
            _Photometric(
                self.size, jitter, jitter_p, grayscale_p, blur[v], sol[v], sigma, blur_kernel
            )
            for v in range(2)
        ]

    def _view(self, img: torch.Tensor, rng: random.Random, photo: _Photometric) -> torch.Tensor:
        height, width = img.shape[-2:]
        x0, y0, w, h = sample_crop_box(rng, height, width, self.scale, self.ratio)
        out = TF.resized_crop(
            img,
            y0,
            x0,
            h,
            w,
            [self.size, self.size],
            interpolation=self.interpolation,
            antialias=True,
        )
        # CARE's order (care.md §4.1): jitter -> blur -> grayscale -> flip -> solarize. The flip
        # after the colour ops differs from BYOL's order only in rounding (the ops commute).
        out = photo.grayscale(photo.blur(photo.colour_jitter(out), rng))
        if rng.random() < self.flip_p:
            out = TF.horizontal_flip(out)
        return photo.solarize(out, rng).contiguous()

    @property
    def output_size(self) -> int:
        """Side of the (square) views the backbone trains on."""
        return self.size

    def __call__(self, img: torch.Tensor, rng: random.Random, epoch: int = 0) -> dict[str, Any]:
        return {
            "x1": self._view(img, rng, self.views[0]),
            "x2": self._view(img, rng, self.views[1]),
        }


# --------------------------------------------------------------------------------------------
# SERE / iBOT: multi-crop with boxes and masks (sere.md §3.7, §4)
# --------------------------------------------------------------------------------------------


def block_mask(
    rng: random.Random,
    height: int,
    width: int,
    target: float,
    *,
    min_aspect: float = 0.3,
) -> torch.Tensor:
    """BEiT/iBOT block masking on a ``height x width`` patch grid (sere.md §4.1); True = masked.

    Repeatedly adds a rectangle of area ~ U(min_area, budget) and log-uniform aspect in
    (min_aspect, 1/min_aspect), where ``budget = target - count`` and
    ``min_area = (min(h, w) // 3) ** 2``. A rectangle is accepted only if it adds between 1 and
    ``budget`` new patches; after 10 failed attempts masking stops, so the count may fall short of
    ``target`` but never exceeds it.
    """
    mask = np.zeros((height, width), dtype=bool)
    count = 0
    min_area = (min(height, width) // 3) ** 2
    log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
    while count < target:
        budget = target - count
        added = 0
        for _ in range(10):
            # random.uniform accepts a > b, so a budget below min_area draws from [budget, min_area]
            # exactly as the official code does.
            area = rng.uniform(min_area, budget)
            aspect = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if w < width and h < height:
                top = rng.randint(0, height - h)
                left = rng.randint(0, width - w)
                box = mask[top : top + h, left : left + w]
                new = h * w - int(box.sum())
                if 0 < new <= budget:
                    box[...] = True
                    added = new
            if added > 0:
                break
        if added == 0:
            break
        count += added
    return torch.from_numpy(mask)


def random_mask(rng: random.Random, height: int, width: int, target: float) -> torch.Tensor:
    """Exactly ``floor(target)`` masked positions chosen uniformly (iBOT ``pred_shape='rand'``).

    Drawn with the sample's Python RNG instead of numpy's global generator (official), so the mask
    is reproducible per sample.
    """
    flat = torch.zeros(height * width, dtype=torch.bool)
    k = int(target)
    if k > 0:
        flat[rng.sample(range(height * width), k)] = True
    return flat.view(height, width)


class SereViews:
    """iBOT multi-crop with recorded crop boxes and global-crop masks, as used by SERE.

    Crops (sere.md §4.2): two global crops (``global_size``, ``global_scale``) and ``local_crops``
    local crops (``local_size``, ``local_scale``), aspect (3/4, 4/3), boxes drawn by
    :func:`sample_crop_box` in original-image pixels, bicubic antialiased resize. Each crop then
    goes through: horizontal flip p 0.5 (recorded) -> ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8 ->
    grayscale p 0.2 -> Gaussian blur (global 1.0 / 0.1, locals 0.5) -> solarize (global 2 only,
    p 0.2). Each box row is ``[x0, y0, w, h, flip]`` (float64, pixels of the decoded image), the
    input of the overlap grids (sere.md §3.7).

    Masks (sere.md §4.1) only for the two global crops (sere.md §8 #17: the official loader also
    draws unused local masks): per crop, one candidate ratio per ``(pred_ratio, pred_ratio_var)``
    pair ~ U(mean - var, mean + var) (or the mean when var is 0), one candidate chosen uniformly,
    target T = ratio * G * G with G = global_size / patch_size; ratio 0 when
    ``epoch < pred_start_epoch``. ``pred_shape`` is ``"block"`` (:func:`block_mask`) or
    ``"rand"`` (:func:`random_mask`).

    Returns ``{"global_crops": uint8[2,3,Sg,Sg], "local_crops": uint8[L,3,Sl,Sl],
    "masks": bool[2,G,G], "global_boxes": float64[2,5], "local_boxes": float64[L,5]}``.
    """

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        global_scale: Sequence[float] = (0.4, 1.0),
        local_scale: Sequence[float] = (0.05, 0.4),
        local_crops: int = 10,
        patch_size: int = 16,
        pred_ratio: float | Sequence[float] = (0.0, 0.3),
        pred_ratio_var: float | Sequence[float] = (0.0, 0.2),
        pred_shape: str = "block",
        pred_start_epoch: int = 0,
        *,
        ratio: Sequence[float] = _IMAGENET_RATIO,
        jitter: Sequence[float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        global_blur_p: float | Sequence[float] = (1.0, 0.1),
        local_blur_p: float = 0.5,
        global_solarize_p: float | Sequence[float] = (0.0, 0.2),
        flip_p: float = 0.5,
        sigma: Sequence[float] = (0.1, 2.0),
        interpolation: str | InterpolationMode = "bicubic",
    ) -> None:
        if global_size % patch_size != 0:
            raise ValueError(
                f"global_size {global_size} must be a multiple of patch_size {patch_size} "
                "(the mask has one entry per ViT patch)"
            )
        if pred_shape not in ("block", "rand"):
            raise ValueError(f"pred_shape must be 'block' or 'rand', got {pred_shape!r}")
        means = (
            [float(pred_ratio)]
            if isinstance(pred_ratio, (int, float))
            else [float(r) for r in pred_ratio]
        )
        vars_ = (
            [float(pred_ratio_var)] * len(means)
            if isinstance(pred_ratio_var, (int, float))
            else [float(v) for v in pred_ratio_var]
        )
        if len(means) != len(vars_):
            raise ValueError(f"pred_ratio {means} and pred_ratio_var {vars_} need the same length")
        for m, v in zip(means, vars_):
            if v < 0 or v > m or m + v > 1.0:
                raise ValueError(
                    f"need 0 <= var <= mean and mean + var <= 1, got mean {m}, var {v}"
                )
        self.global_size = int(global_size)
        self.local_size = int(local_size)
        self.global_scale = (float(global_scale[0]), float(global_scale[1]))
        self.local_scale = (float(local_scale[0]), float(local_scale[1]))
        self.local_crops = int(local_crops)
        self.patch_size = int(patch_size)
        self.grid = self.global_size // self.patch_size
        self.pred_ratio = means
        self.pred_ratio_var = vars_
        self.pred_shape = pred_shape
        self.pred_start_epoch = int(pred_start_epoch)
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.flip_p = float(flip_p)
        self.interpolation = _interp(interpolation)
        g_blur = _as_pair(global_blur_p, "global_blur_p")
        g_sol = _as_pair(global_solarize_p, "global_solarize_p")
        self.global_photo = [
            _Photometric(
                self.global_size, jitter, jitter_p, grayscale_p, g_blur[v], g_sol[v], sigma, None
            )
            for v in range(2)
        ]
        self.local_photo = _Photometric(
            self.local_size, jitter, jitter_p, grayscale_p, float(local_blur_p), 0.0, sigma, None
        )

    def _crop(
        self,
        img: torch.Tensor,
        rng: random.Random,
        size: int,
        scale: tuple[float, float],
        photo: _Photometric,
    ) -> tuple[torch.Tensor, list[float]]:
        height, width = img.shape[-2:]
        x0, y0, w, h = sample_crop_box(rng, height, width, scale, self.ratio)
        out = TF.resized_crop(
            img, y0, x0, h, w, [size, size], interpolation=self.interpolation, antialias=True
        )
        flip = rng.random() < self.flip_p
        if flip:
            out = TF.horizontal_flip(out)
        out = photo.colour(out)
        out = photo.blur(out, rng)
        out = photo.solarize(out, rng)
        return out, [float(x0), float(y0), float(w), float(h), float(flip)]

    @property
    def output_size(self) -> int:
        """Side of the global crops (the resolution the exported teacher learnt)."""
        return self.global_size

    def mask_ratio(self, rng: random.Random, epoch: int) -> float:
        """The masking ratio of one global crop (0 before ``pred_start_epoch``)."""
        if epoch < self.pred_start_epoch:
            return 0.0
        # Every candidate is drawn (consuming the RNG) before one is chosen, as in iBOT.
        candidates = [
            rng.uniform(m - v, m + v) if v > 0 else m
            for m, v in zip(self.pred_ratio, self.pred_ratio_var)
        ]
        return rng.choice(candidates)

    def __call__(self, img: torch.Tensor, rng: random.Random, epoch: int = 0) -> dict[str, Any]:
        globals_, gboxes = zip(
            *(
                self._crop(img, rng, self.global_size, self.global_scale, self.global_photo[v])
                for v in range(2)
            )
        )
        locals_: list[torch.Tensor] = []
        lboxes: list[list[float]] = []
        for _ in range(self.local_crops):
            crop, box = self._crop(img, rng, self.local_size, self.local_scale, self.local_photo)
            locals_.append(crop)
            lboxes.append(box)
        make = block_mask if self.pred_shape == "block" else random_mask
        masks = [
            make(rng, self.grid, self.grid, self.mask_ratio(rng, epoch) * self.grid * self.grid)
            for _ in range(2)
        ]
        if locals_:
            local_t = torch.stack(locals_)
        else:
            local_t = torch.empty((0, 3, self.local_size, self.local_size), dtype=torch.uint8)
        return {
            "global_crops": torch.stack(globals_),
            "local_crops": local_t,
            "masks": torch.stack(masks),
            "global_boxes": torch.tensor(gboxes, dtype=torch.float64),
            "local_boxes": torch.tensor(lboxes, dtype=torch.float64).reshape(self.local_crops, 5),
        }


#: The views classes a recipe's ``data.views`` names.
VIEWS: dict[str, type] = {"care": CareViews, "sere": SereViews}


def build_views(name: str, view_args: Mapping[str, Any]) -> CareViews | SereViews:
    """The views object of a recipe's ``data.views`` / ``data.view_args``."""
    cls = VIEWS[name]
    try:
        return cls(**view_args)
    except TypeError as err:
        raise ValueError(f"data.view_args do not fit {cls.__name__}: {err}") from err


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


class EvalView:
    """Deterministic evaluation view: resize the shorter side to ``floor(size / crop_pct)``, then
    centre-crop ``size`` (224/0.875 -> 256 -> 224, the standard linear/k-NN protocol).

    Returns ``{"image": uint8[3,size,size]}``; :class:`ImageFolderDataset` adds ``"label"``.
    """

    def __init__(
        self,
        size: int = 224,
        crop_pct: float = 0.875,
        interpolation: str | InterpolationMode = "bilinear",
    ) -> None:
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        self.size = int(size)
        self.resize = int(math.floor(size / crop_pct))
        self.interpolation = _interp(interpolation)

    def __call__(
        self, img: torch.Tensor, rng: random.Random | None = None, epoch: int = 0
    ) -> dict[str, Any]:
        out = TF.resize(img, [self.resize], interpolation=self.interpolation, antialias=True)
        out = TF.center_crop(out, [self.size, self.size])
        return {"image": out.contiguous()}


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


class CorruptImageError(RuntimeError):
    """An image file could not be read or decoded (``strict=True``)."""


def image_folder_classes(root: str | os.PathLike[str]) -> list[str]:
    """Class names of an image folder, label order: its sorted, non-hidden sub-folders."""
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_image_folder(root: Path) -> tuple[list[str], list[bytes], list[int]]:
    layout = f"expected ImageNet layout {root}/<class>/<image> with extensions {', '.join(IMAGE_EXTENSIONS)}"
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
    nested folders. ``transform(img, rng, epoch)`` runs inside the per-sample seeding (module
    docstring); a ``None`` transform returns the decoded image as ``"image"``.

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
        """Absolute path of image ``index``."""
        return self.root / os.fsdecode(bytes(self._files[index]))

    @staticmethod
    def _decode(path: Path) -> torch.Tensor:
        img = decode_image(str(path), mode=ImageReadMode.RGB)
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
                        f"cannot read image {path}: {err}. Remove or fix the file, or pass strict=False "
                        "to skip unreadable files (each is replaced by the next readable image)"
                    ) from err
                self._bad.add(j)
                logger.warning(
                    "skipping unreadable image %s (%s); substituting the next readable image",
                    path,
                    err,
                )
        raise RuntimeError(f"none of the {n} images under {self.root} could be decoded")

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
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
            with _seeded_torch(torch_seed):
                out = dict(self.transform(img, rng, epoch))
        out["label"] = int(self.targets[used])
        out["index"] = index
        out["num_replaced"] = int(used != index)
        return out


# --------------------------------------------------------------------------------------------
# Collation
# --------------------------------------------------------------------------------------------


def normalize_uint8(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 ``(x / 255 - mean) / std``: ToTensor then Normalize, done wherever
    the images are (the engine and the evaluation run it on the device). ``mean``/``std`` must
    broadcast against the channel dimension (e.g. shape [3, 1, 1])."""
    return images.to(torch.float32).div_(255.0).sub_(mean).div_(std)


def collate_views(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch a list of sample dicts.

    Tensors under :data:`VIEW_FIRST_KEYS` (leading view dim) become ``[V, B, ...]``; other tensors
    ``[B, ...]`` (``x1``/``x2``/``image``); ``num_replaced`` is summed to an ``int``; other ints
    (``label``, ``index``) become int64 ``[B]``, floats float64 ``[B]``; anything else a list.
    """
    if not samples:
        raise ValueError("collate_views needs at least one sample")
    keys = list(samples[0].keys())
    for s in samples[1:]:
        if s.keys() != samples[0].keys():
            raise ValueError(f"samples have different keys: {sorted(samples[0])} vs {sorted(s)}")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        first = values[0]
        if key == "num_replaced":
            batch[key] = int(sum(values))
        elif isinstance(first, torch.Tensor):
            batch[key] = torch.stack(values, dim=1 if key in VIEW_FIRST_KEYS else 0)
        elif isinstance(first, (bool, int, np.integer)):
            batch[key] = torch.tensor(values, dtype=torch.int64)
        elif isinstance(first, (float, np.floating)):
            batch[key] = torch.tensor(values, dtype=torch.float64)
        else:
            batch[key] = values
    return batch


# --------------------------------------------------------------------------------------------
# Embedded real images for smoke runs
# --------------------------------------------------------------------------------------------

_DIGITS_MARKER = ".selfsup_zoo_digits.json"


@contextlib.contextmanager
def _folder_lock(root: Path) -> Iterator[None]:
    """Exclusive lock so that several ranks materialising the same folder wait for one writer."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): single-process use only
        yield
        return
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def materialize_digits(root: str | os.PathLike[str], size: int = 64, *, val_every: int = 5) -> Path:
    """Write scikit-learn's 1797 digits (real 8x8 grayscale scans) as ``size``x``size`` RGB PNGs.

    Layout: ``root/train/<digit>/<index>.png`` and, when ``val_every > 0``, images whose index is a
    multiple of ``val_every`` go to ``root/val/<digit>/`` instead (disjoint split: 1437 / 360 for
    5), so k-NN/linear smoke evaluation does not test on training images. Pixel values 0..16 are
    scaled to 0..255 and upsampled bicubically. Idempotent: a marker file recording the parameters
    is written last, so an interrupted or differently-parameterised folder is rebuilt. Returns
    ``root``.
    """
    root = Path(root).expanduser()
    size = int(size)
    if size < 8:
        raise ValueError(f"size must be >= 8 (the scans are 8x8), got {size}")
    params = {
        "dataset": "sklearn-digits",
        "size": size,
        "val_every": int(val_every),
        "count": _DIGITS_COUNT,
        "version": 1,
    }
    marker = root / _DIGITS_MARKER

    def complete() -> bool:
        try:
            return json.loads(marker.read_text()) == params
        except (OSError, ValueError):
            return False

    if complete():
        return root
    with _folder_lock(root):
        if complete():  # another process finished while we waited for the lock
            return root
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:  # pragma: no cover - scikit-learn is a dependency
            raise ImportError(
                "embedded digits need scikit-learn (pip install scikit-learn)"
            ) from err
        from torchvision.io import write_png

        logger.info("materialising scikit-learn digits at %d px under %s", size, root)
        marker.unlink(missing_ok=True)
        for split in ("train", "val"):
            shutil.rmtree(root / split, ignore_errors=True)
        digits = load_digits()
        scans = torch.from_numpy(digits.images).to(torch.float32).unsqueeze(1) * (255.0 / 16.0)
        up = torch.nn.functional.interpolate(
            scans, size=(size, size), mode="bicubic", align_corners=False
        )
        images = up.clamp(0, 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
        for i, (img, label) in enumerate(zip(images, digits.target.tolist())):
            split = "val" if val_every > 0 and i % val_every == 0 else "train"
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            write_png(img.contiguous(), str(folder / f"{i:04d}.png"))
        # atomic: the marker appears only once every image is on disk
        atomic_write_text(marker, json.dumps(params))
    return root


def default_cache_dir() -> Path:
    """The package's cache folder: $SELFSUP_ZOO_CACHE or ~/.cache/selfsup_zoo."""
    env = os.environ.get("SELFSUP_ZOO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "selfsup_zoo"


def data_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where embedded data sets are materialised: ``cache_dir`` when given (a recipe's
    ``data.cache_dir``, a CLI's ``--cache-dir``), else ``default_cache_dir() / "data"``."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "data"


def resolve_data_root(spec: str, cache_dir: str | os.PathLike[str]) -> Path:
    """Turn a data argument into an image folder.

    ``"embedded:digits[@SIZE][/SPLIT]"`` (SIZE default 64, SPLIT ``train`` or ``val``, default
    ``train``) materialises the digits under ``cache_dir/digits-SIZE`` and returns that split's
    folder; anything else is a path to an existing folder.
    """
    if spec.startswith("embedded:"):
        body = spec[len("embedded:") :]
        name, _, split = body.partition("/")
        name, _, size_text = name.partition("@")
        split = split or "train"
        usage = "use 'embedded:digits', 'embedded:digits@SIZE' or 'embedded:digits@SIZE/val'"
        if name != "digits":
            raise ValueError(f"unknown embedded data set {name!r} in {spec!r}: {usage}")
        if split not in ("train", "val"):
            raise ValueError(f"unknown split {split!r} in {spec!r}: {usage}")
        try:
            size = int(size_text) if size_text else 64
        except ValueError as err:
            raise ValueError(f"bad size {size_text!r} in {spec!r}: {usage}") from err
        return materialize_digits(Path(cache_dir).expanduser() / f"digits-{size}", size) / split
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"data root {spec!r} is not an existing folder; give a folder in ImageNet layout "
            "<root>/<class>/<image> or 'embedded:digits[@SIZE]'"
        )
    return path
