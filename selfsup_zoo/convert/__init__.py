"""Convert the authors' official checkpoints into the zoo's timm layout.

``python -m selfsup_zoo.convert {care,sere} SRC OUT_DIR [--checkpoint NAME] [--which ...]
[--install]`` reads an official file without unpickling arbitrary objects, picks the right
network, remaps its keys to timm's ``ResNet`` / ``VisionTransformer``, checks them strictly, and
writes a hub folder (``config.json`` + ``model.safetensors`` + ``README.md``). The per-method
mappings live in :mod:`.care` and :mod:`.sere`, what they share in :mod:`.common`, and the safe
loader in :mod:`.loading`; every public name is importable from here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConversionError
from ..hub_folder import HubFolder, install_hub_folder, write_hub_folder
from ..weights import file_sha256
from .care import convert_care, looks_like_care
from .common import (
    Conversion,
    entry_for_method,
    infer_checkpoint,
    match_architecture,
    resolve_checkpoint_name,
    strip_prefix,
)
from .loading import load_official, unsafe_checkpoint_error
from .sere import convert_sere, looks_like_sere

_logger = logging.getLogger(__name__)

__all__ = [
    "Conversion",
    "load_official",
    "unsafe_checkpoint_error",
    "match_architecture",
    "strip_prefix",
    "infer_checkpoint",
    "resolve_checkpoint_name",
    "convert",
    "convert_to_hub_folder",
    "CONVERTERS",
]

#: One converter per method: ``(loaded file, checkpoint=, which=, what=) -> Conversion``.
CONVERTERS: dict[str, Callable[..., Conversion]] = {"care": convert_care, "sere": convert_sere}
# Which layouts each method's converter reads: a file of the other method is refused by name.
_LAYOUTS: dict[str, Callable[[object], bool]] = {"care": looks_like_care, "sere": looks_like_sere}
_NETWORKS = {"care": "ResNet", "sere": "ViT"}


def _refuse_other_method(obj: Any, method: str, what: str) -> None:
    """ConversionError when ``obj`` is not a ``method`` file but another method's."""
    if _LAYOUTS[method](obj):
        return
    for other, looks_like in _LAYOUTS.items():
        if other != method and looks_like(obj):
            raise ConversionError(
                f"{what} is a {other.upper()} checkpoint ({_NETWORKS[other]} weights), not a "
                f"{method.upper()} one ({_NETWORKS[method]}): convert it with "
                f"`python -m selfsup_zoo.convert {other} ...`."
            )


def convert(
    method: str,
    src: str | os.PathLike[str],
    *,
    checkpoint: str | None = None,
    which: str | None = None,
) -> Conversion:
    """Read an official ``method`` checkpoint and map it to timm keys (no files written).

    Args:
        method: ``"care"`` or ``"sere"``.
        src: the official file.
        checkpoint: its catalog name (default: inferred when the file tells it unambiguously).
        which: ``"student"`` or ``"teacher"`` for a full pre-training checkpoint.

    Returns:
        The timm state dict, its architecture and catalog name, and notes on what was exported.

    Raises:
        UnsafeCheckpointError: the file needs objects that are unsafe to unpickle.
        ConversionError: a file of another method, architecture or kind (the message says which).
    """
    if method not in CONVERTERS:
        raise ValueError(f"Unknown method {method!r}: {' or '.join(map(repr, CONVERTERS))}.")
    if checkpoint is not None:
        # Unknown names and the wrong method are reported before the file is even read.
        entry_for_method(checkpoint, method)
    obj = load_official(src)
    _refuse_other_method(obj, method, str(src))
    result = CONVERTERS[method](obj, checkpoint=checkpoint, which=which, what=str(src))
    result.provenance.setdefault("converted_from", Path(src).name)
    return result


def convert_to_hub_folder(
    method: str,
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    checkpoint: str | None = None,
    which: str | None = None,
    install: bool = False,
) -> tuple[Conversion, HubFolder]:
    """:func:`convert`, then write the hub folder (and install it into the weights directory).

    Args:
        method, src, checkpoint, which: as for :func:`convert`.
        out_dir: the hub folder to write.
        install: also copy it into the local weights directory (needs the catalog name).

    Returns:
        The conversion and the written folder.
    """
    result = convert(method, src, checkpoint=checkpoint, which=which)
    result.provenance["source_sha256"] = file_sha256(src)
    folder = write_hub_folder(
        out_dir,
        result.state_dict,
        architecture=result.timm_arch,
        checkpoint=result.checkpoint,
        provenance=result.provenance,
        pretrained_cfg=None if result.checkpoint else {"num_classes": result.num_classes},
    )
    if install:
        if result.checkpoint is None:
            raise ConversionError(
                "--install needs the catalog name of the checkpoint, which cannot be told from "
                f"the file: pass --checkpoint (one of {', '.join(result.candidates)})."
            )
        install_hub_folder(folder, result.checkpoint)
    return result, folder
