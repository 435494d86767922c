"""Convert the authors' official checkpoints into the zoo's timm layout.

``python -m selfsup_zoo.convert {care,sere} SRC OUT_DIR [--checkpoint NAME] [--which ...]
[--install]`` reads an official file without unpickling arbitrary objects, picks the right
network, remaps its keys to timm's ``ResNet`` / ``VisionTransformer``, checks them strictly, and
writes a hub folder (``config.json`` + ``model.safetensors`` + ``README.md``). The per-method
mappings live in :mod:`.care` and :mod:`.sere`.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import catalog
from ..errors import ArchitectureMismatchError, ConversionError, UnsafeCheckpointError
from ..hub_folder import HubFolder, install_hub_folder, write_hub_folder
from ..shapes import check_state_dict, compare_keys, expected_shapes
from ..weights import file_sha256

_logger = logging.getLogger(__name__)

__all__ = ["Conversion", "load_official", "match_architecture", "convert", "convert_to_hub_folder"]


@dataclass
class Conversion:
    """An official checkpoint mapped to timm keys, with what was learnt on the way."""

    state_dict: dict[str, torch.Tensor]
    arch: str  # zoo architecture, e.g. "care_resnet50"
    checkpoint: str | None  # catalog name (given, or inferred when unambiguous)
    candidates: list[str]  # catalog names the file may be, when not inferred
    num_classes: int
    notes: list[str] = field(default_factory=list)  # what was picked and dropped, for the report
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def timm_arch(self) -> str:
        return catalog.default_entry(self.arch).timm_arch


def load_official(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` with ``weights_only=True``; only ``argparse.Namespace`` is allow-listed.

    DINO/iBOT/SERE full checkpoints pickle their command-line ``args`` (a plain attribute
    container); anything else that needs arbitrary code to unpickle is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: it needs objects that are unsafe to unpickle "
            f"({first_line}). Official CARE/SERE checkpoints only hold tensors, numbers and an "
            "argparse.Namespace; this file is something else, or has been tampered with. It was "
            "not loaded. Check where it came from (and its sha256) before anything else."
        ) from None


def strip_prefix(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Keys starting with ``prefix``, with it removed (other keys dropped)."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _entry_for_method(checkpoint: str, method: str) -> catalog.CatalogEntry:
    """The catalog entry ``checkpoint``, refused when it belongs to the other method."""
    entry = catalog.get_entry(checkpoint)
    if entry.method != method:
        raise ConversionError(
            f"--checkpoint {entry.name} is a {entry.method.upper()} checkpoint, but this is "
            f"the {method} converter: use `python -m selfsup_zoo.convert {entry.method} ...`."
        )
    return entry


def match_architecture(
    state_dict: Mapping[str, torch.Tensor],
    method: str,
    num_classes: int,
    what: str,
    checkpoint: str | None = None,
) -> str:
    """The zoo architecture whose timm keys and shapes ``state_dict`` matches exactly.

    With ``checkpoint`` the architecture is that entry's and a mismatch names the offending keys;
    without it every architecture of ``method`` is tried and the error describes the closest one.
    """
    if checkpoint is not None:
        entry = _entry_for_method(checkpoint, method)
        if entry.num_classes != num_classes:
            raise ConversionError(
                f"{what} {'has' if num_classes else 'has no'} classifier "
                f"(num_classes={num_classes}) but {entry.name} has num_classes={entry.num_classes}."
            )
        check_state_dict(
            state_dict,
            expected_shapes(entry.timm_arch, num_classes),
            what=what,
            target=f"{entry.name} (timm {entry.timm_arch})",
        )
        return entry.arch
    archs = [a for a in catalog.architectures() if catalog.default_entry(a).method == method]
    scored = []
    for arch in archs:
        expected = expected_shapes(catalog.default_entry(arch).timm_arch, num_classes)
        bad = sum(
            map(len, compare_keys(state_dict, expected))
        )  # missing + unexpected + wrong shape
        if bad == 0:
            return arch
        scored.append((bad, arch))
    closest = min(scored)[1]
    try:
        check_state_dict(
            state_dict,
            expected_shapes(catalog.default_entry(closest).timm_arch, num_classes),
            what=what,
            target=f"any {method.upper()} architecture; closest is {closest}",
        )
    except ArchitectureMismatchError as e:
        raise ArchitectureMismatchError(
            f"{e}\n  Known {method.upper()} architectures: {', '.join(archs)}."
        ) from None
    raise AssertionError("unreachable: a mismatch was counted")  # pragma: no cover


def infer_checkpoint(
    arch: str, num_classes: int, epochs: int | None
) -> tuple[str | None, list[str]]:
    """Catalog name for a converted file: unique match on epochs, else the only official row."""
    rows = [e for e in catalog.entries_for(arch) if e.num_classes == num_classes]
    if epochs is not None:
        by_epochs = [e for e in rows if e.epochs == epochs]
        if len(by_epochs) == 1:
            return by_epochs[0].name, [by_epochs[0].name]
    official = [e for e in rows if e.upstream == catalog.OFFICIAL]
    if len(official) == 1 and (epochs is None or official[0].epochs == epochs):
        return official[0].name, [e.name for e in rows]
    return None, [e.name for e in rows]


def resolve_checkpoint_name(
    checkpoint: str | None, arch: str, num_classes: int, epochs: int | None
) -> tuple[str | None, list[str]]:
    """The given ``--checkpoint`` (full catalog name), else :func:`infer_checkpoint`."""
    if checkpoint:
        name = catalog.get_entry(checkpoint).name
        return name, [name]
    return infer_checkpoint(arch, num_classes, epochs)


def convert(
    method: str,
    src: str | os.PathLike[str],
    *,
    checkpoint: str | None = None,
    which: str | None = None,
) -> Conversion:
    """Read an official ``method`` checkpoint and map it to timm keys (no files written)."""
    if method == "care":
        from .care import convert_care as fn
    elif method == "sere":
        from .sere import convert_sere as fn
    else:
        raise ValueError(f"Unknown method {method!r}: 'care' or 'sere'.")
    if checkpoint is not None:
        # Unknown names and the wrong method are reported before the file is even read.
        _entry_for_method(checkpoint, method)
    obj = load_official(src)
    result = fn(obj, checkpoint=checkpoint, which=which, what=str(src))
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
    """:func:`convert`, then write the hub folder (and install it into the weights directory)."""
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
