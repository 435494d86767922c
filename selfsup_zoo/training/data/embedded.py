"""Embedded real images for smoke runs, and where materialised data sets live on disk.

``embedded:digits[@SIZE][/SPLIT]`` data arguments name scikit-learn's digits, written once as an
image folder under the data cache (:func:`data_cache_dir`) and then read like any other folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from torchvision.io import write_png

from selfsup_zoo._io import atomic_write_text
from selfsup_zoo.paths import cache_root, data_root

logger = logging.getLogger(__name__)

__all__ = ["data_cache_dir", "default_cache_dir", "materialize_digits", "resolve_data_root"]

_DIGITS_COUNT = 1797  # images in scikit-learn's digits set (a fixed, shipped file)
_DIGITS_MARKER = ".selfsup_zoo_digits.json"


@contextlib.contextmanager
def _folder_lock(root: Path) -> Iterator[None]:
    """Exclusive lock so that several ranks materialising the same folder wait for one writer.

    Args:
        root: The folder (created if missing); the lock file is ``root/.lock``.
    """
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl  # POSIX only, hence imported where the lock is taken
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
    is written last, so an interrupted or differently-parameterised folder is rebuilt. Safe to call
    from several processes at once (they wait for one writer).

    Args:
        root: The folder to write (created if missing).
        size: Side of the written images in pixels, >= 8.
        val_every: Every ``val_every``-th image goes to ``val``; 0 puts all of them in ``train``.

    Returns:
        ``root`` (user expanded), an image folder parent with ``train`` and ``val`` splits.
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
            recorded: object = json.loads(marker.read_text())
            return recorded == params
        except (OSError, ValueError):
            return False

    if complete():
        return root
    with _folder_lock(root):
        if complete():  # another process finished while we waited for the lock
            return root
        try:
            # Lazy: scikit-learn is heavy to import and only needed when a folder is (re)built.
            from sklearn.datasets import load_digits
        except ImportError as err:  # pragma: no cover - scikit-learn is a dependency
            raise ImportError(
                "embedded digits need scikit-learn (pip install scikit-learn)"
            ) from err
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
        for i, (img, label) in enumerate(zip(images, digits.target.tolist(), strict=True)):
            split = "val" if val_every > 0 and i % val_every == 0 else "train"
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            write_png(img.contiguous(), str(folder / f"{i:04d}.png"))
        # atomic: the marker appears only once every image is on disk
        atomic_write_text(marker, json.dumps(params))
    return root


def default_cache_dir() -> Path:
    """The package's cache root, shared with the weights (:func:`selfsup_zoo.paths.cache_root`).

    Returns:
        ``$SELFSUP_ZOO_CACHE`` when set, else ``$XDG_CACHE_HOME/selfsup_zoo``, else
        ``~/.cache/selfsup_zoo``.
    """
    return cache_root()


def data_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where embedded data sets are materialised.

    Args:
        cache_dir: A recipe's ``data.cache_dir`` or a CLI's ``--cache-dir``; ``None`` or empty for
            the default.

    Returns:
        ``cache_dir`` (user expanded) when given, else :func:`selfsup_zoo.paths.data_root`
        (``default_cache_dir() / "data"``).
    """
    return Path(cache_dir).expanduser() if cache_dir else data_root()


def resolve_data_root(spec: str, cache_dir: str | os.PathLike[str]) -> Path:
    """Turn a data argument into an image folder.

    ``"embedded:digits[@SIZE][/SPLIT]"`` (SIZE default 64, SPLIT ``train`` or ``val``, default
    ``train``) materialises the digits under ``cache_dir/digits-SIZE`` and returns that split's
    folder; anything else is a path to an existing folder.

    Args:
        spec: The data argument (a recipe's ``data.root``, a CLI's data option).
        cache_dir: Where embedded data sets are materialised (see :func:`data_cache_dir`).

    Returns:
        The image folder.

    Raises:
        ValueError: A malformed ``embedded:`` argument.
        FileNotFoundError: A path that is not an existing folder.
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
