"""Hub folders in timm's layout: write them, and install them into the local weights directory.

A hub folder holds ``config.json`` (timm's own architecture and pretrained cfg),
``model.safetensors`` and ``README.md`` (the model card), so that plain timm loads it with
``timm.create_model('local-dir:<folder>', pretrained=True)`` and ``huggingface_hub`` can upload it
as it is. :func:`install_hub_folder` copies one into :func:`selfsup_zoo.weights.weights_dir`, where
``timm.create_model('<arch>.<tag>', pretrained=True)`` finds it offline.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save
from timm.models import PretrainedCfg

from . import catalog
from ._io import apply_umask, atomic_write, atomic_write_text, file_lock, fsync_dir
from .cards import render_model_card
from .catalog import CATALOG, WEIGHTS_FILENAME, CatalogEntry
from .shapes import check_state_dict, expected_shapes, feature_dim, jsonable, meta_model
from .weights import file_sha256, read_safetensors_header, weights_dir

_logger = logging.getLogger(__name__)

__all__ = ["HubFolder", "write_hub_folder", "install_hub_folder"]


@dataclass(frozen=True)
class HubFolder:
    """A folder in timm's Hub layout: ``config.json``, ``model.safetensors``, ``README.md``."""

    path: Path
    weights_path: Path
    sha256: str

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def readme_path(self) -> Path:
        return self.path / "README.md"


# Fields of a pretrained cfg that say where weights come from: meaningless inside a hub folder.
_SOURCE_FIELDS = {
    "url",
    "file",
    "state_dict",
    "hf_hub_id",
    "hf_hub_filename",
    "source",
    "architecture",
}


def _timm_architecture(architecture: str, entry: CatalogEntry | None) -> str:
    # A zoo name (care_resnet50) would make the folder unusable without this package: translate.
    zoo_arch = architecture.split(".", 1)[0]
    if zoo_arch in catalog.architectures():
        translated = catalog.default_entry(zoo_arch).timm_arch
        _logger.info("Hub folder architecture %s -> timm's %s", architecture, translated)
        architecture = translated
    if entry is not None and architecture != entry.timm_arch:
        raise ValueError(
            f"architecture {architecture!r} does not match checkpoint {entry.name!r}, whose timm "
            f"architecture is {entry.timm_arch!r}."
        )
    if not timm.is_model(architecture):
        raise ValueError(f"{architecture!r} is not a timm architecture (timm.list_models()).")
    return architecture


def _base_cfg(architecture: str, entry: CatalogEntry | None) -> dict[str, Any]:
    if entry is not None:
        return dict(entry.pretrained_cfg())
    for row in CATALOG.values():
        # A zoo backbone trained here without a catalog name: the method's cfg, minus the tag.
        if row.timm_arch == architecture and row.num_classes == 0:
            return dict(row.pretrained_cfg())
    cfg = timm.get_pretrained_cfg(architecture)
    keep = (
        "input_size",
        "fixed_input_size",
        "interpolation",
        "crop_pct",
        "crop_mode",
        "mean",
        "std",
        "pool_size",
        "first_conv",
        "classifier",
    )
    return {k: getattr(cfg, k) for k in keep} if cfg is not None else {}


def _save_safetensors_atomic(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    # Fixed metadata keeps the bytes (and the sha256) a function of the tensors alone.
    atomic_write(path, lambda f: f.write(save(dict(tensors), metadata={"format": "pt"})))


def _plain_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] is a {type(value).__name__}, not a tensor")
        tensor = value.detach().to("cpu").contiguous()
        # safetensors refuses tensors that share storage (tied weights, views): give each its own.
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


def write_hub_folder(
    out_dir: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    *,
    architecture: str,
    model_args: Mapping[str, Any] | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    checkpoint: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> HubFolder:
    """Write ``config.json`` + ``model.safetensors`` + ``README.md`` that plain timm loads.

    ``architecture`` is timm's own architecture (``resnet50``, ``vit_small_patch16_224``; a zoo
    name such as ``care_resnet50`` is translated). With ``checkpoint`` (a catalog name) the
    pretrained cfg comes from the catalog and the zoo tag is recorded; ``pretrained_cfg`` entries
    override it. Before anything is written, the state dict is checked key for key and shape for
    shape against ``timm.create_model(architecture, num_classes=<cfg num_classes>, **model_args)``,
    so that the folder loads with ``timm.create_model('local-dir:<folder>', pretrained=True)``.

    Args:
        out_dir: the folder to write (created if missing).
        state_dict: timm-layout tensors of ``architecture`` (any device; shapes as the model's).
        architecture: timm's architecture, or a zoo architecture (translated).
        model_args: further ``timm.create_model`` kwargs, recorded in ``config.json``.
        pretrained_cfg: entries that override the catalog's (or timm's) pretrained cfg.
        checkpoint: catalog name of the weights; None for weights outside the catalog.
        provenance: how the weights were made (JSON-serialisable), recorded in the config and card.

    Returns:
        The folder, its weights file and that file's sha256.

    Raises:
        ArchitectureMismatchError: the state dict does not fit the architecture.
        ValueError: an architecture timm does not know, one that contradicts ``checkpoint``, or a
            pretrained cfg field timm does not know.
    """
    entry = catalog.get_entry(checkpoint) if checkpoint else None
    arch = _timm_architecture(architecture, entry)
    args = dict(entry.model_args if entry is not None else {})
    args.update(model_args or {})

    cfg = _base_cfg(arch, entry)
    cfg.update(pretrained_cfg or {})
    cfg = {k: v for k, v in cfg.items() if k not in _SOURCE_FIELDS and v is not None}
    if entry is not None:
        cfg["tag"] = entry.tag
    if entry is None and "num_classes" not in (pretrained_cfg or {}):
        # No catalog row says whether a classifier is included: the state dict does.
        head = f"{cfg.get('classifier', 'fc')}.weight"
        cfg["num_classes"] = int(state_dict[head].shape[0]) if head in state_dict else 0
    num_classes = int(cfg.get("num_classes", 0))
    try:
        PretrainedCfg(**cfg)  # catch typos now, not when a user loads the folder
    except TypeError as e:
        raise ValueError(f"pretrained_cfg has a field timm does not know: {e}") from None

    tensors = _plain_tensors(state_dict)
    model = meta_model(arch, num_classes, args)
    check_state_dict(
        tensors,
        expected_shapes(arch, num_classes, args),
        what="The state dict",
        target=f"timm {arch} (num_classes={num_classes}, model_args={args})",
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / WEIGHTS_FILENAME
    _save_safetensors_atomic(tensors, weights_path)
    read_safetensors_header(weights_path)
    sha256 = file_sha256(weights_path)

    config: dict[str, Any] = {
        "architecture": arch,
        "num_classes": num_classes,
        "num_features": feature_dim(model),
    }
    global_pool = getattr(model, "global_pool", None)
    pool_type = (
        global_pool if isinstance(global_pool, str) else getattr(global_pool, "pool_type", "")
    )
    if pool_type:
        config["global_pool"] = pool_type
    if args:
        config["model_args"] = args
    config["pretrained_cfg"] = cfg
    # Ignored by timm; tells a reader (and `selfsup_zoo.publish`) which zoo checkpoint this is.
    config["selfsup_zoo"] = {
        "checkpoint": entry.name if entry is not None else None,
        "method": entry.method if entry is not None else None,
        "sha256": sha256,
        "provenance": dict(provenance or {}),
    }
    try:
        text = json.dumps(jsonable(config), indent=2)
    except TypeError as e:
        raise ValueError(f"provenance and model_args must be JSON-serialisable: {e}") from None
    atomic_write_text(out / "config.json", text + "\n")
    card = render_model_card(
        entry,
        sha256=sha256,
        provenance=provenance,
        architecture=arch,
        model_args=args,
        num_classes=num_classes,
    )
    atomic_write_text(out / "README.md", card)
    _logger.info("Wrote hub folder %s (%s, sha256 %s)", out, arch, sha256)
    return HubFolder(path=out, weights_path=weights_path, sha256=sha256)


def install_hub_folder(folder: HubFolder | str | os.PathLike[str], name: str) -> Path:
    """Copy a hub folder into the local weights directory as checkpoint ``name``.

    Afterwards ``timm.create_model(name, pretrained=True)`` finds it without network access.
    Safe while other processes load or install the same checkpoint: installers of one entry take
    turns (a lock file ``.<name>.lock`` beside it), the files are copied into a staging folder
    first, and each becomes visible with one atomic rename, so that a reader finds either no entry,
    or complete files (old or new), never a half-copied or missing weights file. The entry and its
    files get the modes the umask gives (0755 / 0644 under umask 022), so that a weights directory
    shared by several users or jobs stays readable to all of them.

    Args:
        folder: the hub folder (or its path) to copy.
        name: the catalog checkpoint it holds (a bare architecture means its default tag).

    Returns:
        The installed weights file, ``<weights dir>/<arch>.<tag>/model.safetensors``.
    """
    entry = catalog.get_entry(name)
    src = Path(folder.path if isinstance(folder, HubFolder) else folder)
    read_safetensors_header(src / WEIGHTS_FILENAME)
    root = weights_dir()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / entry.name
    with file_lock(root / f".{entry.name}.lock"):
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=root))
        try:
            apply_umask(staging)  # mkdtemp makes it 0700; the entry it becomes is shared
            names = _stage(src, staging)
            if not dest.exists():
                os.replace(staging, dest)  # a new entry appears whole
            else:
                _replace_files(staging, dest, names)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        fsync_dir(root)
    return dest / WEIGHTS_FILENAME


def _stage(src: Path, staging: Path) -> list[str]:
    # Copies flushed to disk before any rename makes them visible.
    names = []
    for item in sorted(src.iterdir()):
        if item.is_file():
            shutil.copy2(item, staging / item.name)
            apply_umask(staging / item.name)  # not the source's mode (a private 0600 file)
            with open(staging / item.name, "rb+") as f:
                os.fsync(f.fileno())
            names.append(item.name)
    return names


def _replace_files(staging: Path, dest: Path, names: list[str]) -> None:
    # An entry that exists cannot be swapped in one rename (a folder is never renamed over a
    # non-empty one): replace it file by file, weights last, each rename atomic. Readers only open
    # the weights file, which thus always exists and is always complete.
    for file_name in sorted(names, key=lambda n: n == WEIGHTS_FILENAME):
        os.replace(staging / file_name, dest / file_name)
    for stale in dest.iterdir():
        # Files an older install left that the new folder does not have (never the weights).
        if stale.name not in names and stale.name != WEIGHTS_FILENAME and stale.is_file():
            stale.unlink()
    fsync_dir(dest)
