"""Find, verify and load the zoo's weights; write hub folders in timm's layout.

Where ``pretrained=True`` looks for the weights of checkpoint ``<arch>.<tag>``, first hit wins:

1. an explicit file: ``pretrained_cfg_overlay=dict(file='.../model.safetensors')``;
2. the local weights directory, ``$SELFSUP_ZOO_WEIGHTS/<arch>.<tag>/model.safetensors`` (default
   ``$XDG_CACHE_HOME/selfsup_zoo/weights``, i.e. ``~/.cache/selfsup_zoo/weights``), where
   ``python -m selfsup_zoo.convert ... --install`` puts converted official releases;
3. the Hugging Face Hub repo named in the catalog (its cache, progress bar and ``HF_HUB_OFFLINE``
   apply) once the catalog marks the checkpoint published, or a repo the caller names with
   ``pretrained_cfg_overlay=dict(hf_hub_id=...)``. For a checkpoint the catalog does not mark
   published, only the local Hugging Face cache is looked at (no network request), so a cache
   filled by hand or by a newer release still works offline.

Only safetensors files are accepted on this path: nothing is unpickled. A file's header and size are
checked before loading, its sha256 is compared with the catalog's when the catalog knows it, and
its keys and shapes are compared with the architecture before timm loads it (timm then adapts the
classifier and ``in_chans`` as usual).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

from . import catalog
from ._io import atomic_write, atomic_write_text
from .catalog import CATALOG, WEIGHTS_FILENAME, CatalogEntry, UnknownNameError

_logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "SELFSUP_ZOO_WEIGHTS"

__all__ = [
    "WEIGHTS_DIR_ENV",
    "ZooError",
    "UnknownNameError",
    "WeightsNotPublishedError",
    "WeightsNotCachedError",
    "WeightsDownloadError",
    "CorruptWeightsError",
    "HashMismatchError",
    "ArchitectureMismatchError",
    "UnsafeCheckpointError",
    "ConversionError",
    "InvalidHubFolderError",
    "ResolvedWeights",
    "HubFolder",
    "weights_dir",
    "installed_path",
    "file_sha256",
    "read_safetensors_header",
    "resolve_weights",
    "resolve_cfg_weights",
    "check_state_dict",
    "compare_keys",
    "expected_shapes",
    "meta_model",
    "write_hub_folder",
    "install_hub_folder",
]


# ------------------------------------------------------------------------------------------------
# Errors: each message says what was wrong and what to do about it.


class ZooError(RuntimeError):
    """Base class of the errors this package raises about weights and checkpoints."""


class WeightsNotPublishedError(ZooError, FileNotFoundError):
    """The checkpoint is in the catalog but its weights are not on the Hub (yet)."""


class WeightsNotCachedError(ZooError, FileNotFoundError):
    """Offline (``HF_HUB_OFFLINE=1`` or no network) and the weights are not in the local cache."""


class WeightsDownloadError(ZooError):
    """The Hub refused the download (repo, revision or file missing, access denied)."""


class CorruptWeightsError(ZooError):
    """A weights file is truncated, has a damaged header, or is not a safetensors file."""


class HashMismatchError(ZooError):
    """A weights file's sha256 differs from the one the catalog records."""


class ArchitectureMismatchError(ZooError):
    """Weights whose keys or shapes do not fit the architecture they are loaded into."""


class UnsafeCheckpointError(ZooError):
    """A checkpoint that cannot be read without unpickling arbitrary objects: refused."""


class ConversionError(ZooError):
    """An official checkpoint that the converter cannot map to a zoo checkpoint."""


class InvalidHubFolderError(ZooError):
    """A hub folder that would not load with plain timm (or lacks a proper model card)."""


# ------------------------------------------------------------------------------------------------
# Local weights directory


def weights_dir() -> Path:
    """The local weights directory (``$SELFSUP_ZOO_WEIGHTS``, else the user cache)."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache_home).expanduser() / "selfsup_zoo" / "weights"


def installed_path(name: str) -> Path:
    """Where the weights of catalog checkpoint ``name`` live inside :func:`weights_dir`."""
    return weights_dir() / name / WEIGHTS_FILENAME


# ------------------------------------------------------------------------------------------------
# File checks

# safetensors element sizes, to check that the header's byte ranges agree with shapes and dtypes.
_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
# A header larger than this is not a weights file (safetensors itself caps it at 100 MB).
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks (weights files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _corrupt(path: Path, why: str) -> CorruptWeightsError:
    return CorruptWeightsError(
        f"{path} is not a valid safetensors weights file: {why}. The file is probably truncated "
        "(an interrupted download or copy) or damaged: delete it and download or convert it "
        "again (for a Hub download, delete it from the Hugging Face cache, e.g. with "
        "`hf cache delete`, and load again with network access)."
    )


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check a safetensors header without loading any tensor.

    Returns ``{name: {"dtype", "shape", "data_offsets"}}`` (``__metadata__`` left out). Raises
    :class:`CorruptWeightsError` if the header is damaged or the file is shorter or longer than the
    header says, so that a truncated download is reported as such rather than as a cryptic
    deserialisation error half-way through loading.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _corrupt(path, f"only {size} bytes long")
        (header_len,) = struct.unpack("<Q", prefix)
        if prefix[:2] == b"PK" or prefix[:1] == b"\x80":
            raise CorruptWeightsError(
                f"{path} is a PyTorch pickle checkpoint, not a safetensors file. The pretrained "
                "path only reads safetensors (nothing is unpickled): convert an official release "
                "with `python -m selfsup_zoo.convert {care,sere} <file> <out_dir>`, or load a file "
                "that is already in timm's layout with `checkpoint_path=`."
            )
        if header_len > min(_MAX_HEADER_BYTES, size - 8):
            raise _corrupt(path, f"header length {header_len} does not fit in {size} bytes")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    header.pop("__metadata__", None)
    data_len = size - 8 - header_len
    end_max = 0
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            numel = 1
            for dim in shape:
                numel *= int(dim)
            nbytes = numel * _DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            raise _corrupt(path, f"entry {name!r} of the header is malformed") from None
        if end - begin != nbytes or begin < 0:
            raise _corrupt(path, f"tensor {name!r} has {end - begin} bytes, {nbytes} expected")
        end_max = max(end_max, end)
    if end_max != data_len:
        raise _corrupt(
            path, f"the header describes {end_max} bytes of tensor data, the file holds {data_len}"
        )
    return header


def _check_hash(path: Path, expected: str | None, name: str) -> str | None:
    if not expected:
        return None
    actual = file_sha256(path)
    if actual != expected.lower():
        raise HashMismatchError(
            f"sha256 of {path} is {actual}, but the catalog records {expected} for {name!r}. The "
            "file is damaged, stale or not the published checkpoint: delete it and download it "
            "again (or re-run the conversion); if you meant to load different weights, pass them "
            "explicitly with pretrained_cfg_overlay=dict(file=...)."
        )
    return actual


# ------------------------------------------------------------------------------------------------
# Resolution


@dataclass(frozen=True)
class ResolvedWeights:
    """Where the weights of one checkpoint were found."""

    path: Path
    source: str  # "file" | "weights-dir" | "hf-cache" (unpublished, cache only) | "hf-hub"
    sha256: str | None  # verified hash when the catalog knows it, else None


def _split_revision(repo: str) -> tuple[str, str | None]:
    # timm's convention: 'org/name@revision' pins a branch, tag or commit.
    repo_id, _, revision = repo.partition("@")
    return repo_id, revision or None


def _not_published(entry: CatalogEntry) -> WeightsNotPublishedError:
    lines = [
        f"The weights of {entry.name!r} are not published on the Hugging Face Hub yet "
        f"(catalog: published=False; would be {entry.hub_repo}), and no local copy exists at "
        f"{installed_path(entry.name)}.",
        "What to do:",
    ]
    from .cards import convert_command  # late: only this path needs the cards module

    command = convert_command(entry, out_dir="<out_dir>")
    if command:
        lines.append(
            f"  - the authors released it: {entry.upstream_detail} Download that file and "
            f"convert it into the local weights directory:\n      {command}"
        )
    if entry.recipe:
        lines.append("  - regenerate it: python -m selfsup_zoo.training.reproduce " + entry.recipe)
    elif entry.regenerate_note:
        lines.append(f"  - regenerate it: {entry.regenerate_note}")
    lines.append(
        "  - or load a file you have: timm.create_model(..., pretrained=True, "
        "pretrained_cfg_overlay=dict(file='<dir>/model.safetensors'))"
    )
    return WeightsNotPublishedError("\n".join(lines))


def _cached(repo: str, filename: str, cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """The file from the local Hugging Face cache only (no network), or None."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, revision = _split_revision(repo)
    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    return Path(found) if isinstance(found, str) else None


def _download(
    repo: str, filename: str, name: str, cache_dir: str | os.PathLike[str] | None
) -> Path:
    # Imported here: huggingface_hub is only needed when the Hub is actually asked.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = _split_revision(repo)
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
    except LocalEntryNotFoundError:
        # Subclasses EntryNotFoundError in huggingface_hub 2.x: must be caught first.
        offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
        from huggingface_hub import constants

        raise WeightsNotCachedError(
            f"Cannot load {name!r}: {why} and {repo}/{filename} is not in the Hugging Face cache "
            f"({cache_dir or constants.HF_HUB_CACHE}). Run once with network access (without "
            f"HF_HUB_OFFLINE) to fill the cache, or copy a hub folder to "
            f"{installed_path(name).parent}, or pass pretrained_cfg_overlay=dict(file=...)."
        ) from None
    except GatedRepoError as e:
        raise WeightsDownloadError(
            f"Access to {repo_id} is restricted: log in (`hf auth login` or HF_TOKEN) with an "
            f"account that may read it. ({e})"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise WeightsDownloadError(
            f"Cannot download {filename} of {name!r} from {repo}: {type(e).__name__}. Check the "
            "repo id and revision (a private repo needs a token: `hf auth login`)."
        ) from None


def resolve_weights(
    entry: CatalogEntry | None,
    *,
    file: str | os.PathLike[str] | None = None,
    hf_hub_id: str | None = None,
    hf_hub_filename: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ResolvedWeights:
    """Find and verify the safetensors weights of ``entry`` (explicit file > weights dir > Hub).

    ``hf_hub_id`` other than the catalog's repo (a mirror or fork the caller chose) is tried even
    for unpublished checkpoints and its files are not held to the catalog's hash.
    """
    name = entry.name if entry is not None else (hf_hub_id or str(file))
    if file is not None:
        path = Path(file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Weights file {path} (given as pretrained file) is missing.")
        if path.suffix != ".safetensors":
            raise CorruptWeightsError(
                f"{path}: the pretrained path only reads '.safetensors' files (nothing is "
                "unpickled). Convert an official release with `python -m selfsup_zoo.convert`, or "
                "load a timm-layout PyTorch file with `checkpoint_path=`."
            )
        read_safetensors_header(path)
        return ResolvedWeights(path, "file", None)

    if entry is not None:
        local = installed_path(entry.name)
        if local.is_file():
            read_safetensors_header(local)
            digest = _check_hash(local, entry.sha256, entry.name)
            _logger.info("Loading %s from the local weights directory: %s", entry.name, local)
            return ResolvedWeights(local, "weights-dir", digest)

    repo = hf_hub_id or (entry.hub_repo if entry is not None else None)
    if repo is None:
        raise ValueError("No weights source: give a catalog entry, a file or a Hub repo id.")
    own_repo = entry is not None and _split_revision(repo)[0] == entry.hub_repo
    filename = hf_hub_filename or (entry.hub_filename if entry is not None else WEIGHTS_FILENAME)
    if not filename.endswith(".safetensors"):
        raise CorruptWeightsError(
            f"{repo}/{filename}: the pretrained path only reads '.safetensors' files."
        )
    if own_repo and not entry.published:
        # Not on the Hub as far as this release knows: never ask the network (it would only time
        # out or 404), but a Hugging Face cache filled by hand or by a newer release still serves.
        cached = _cached(repo, filename, cache_dir)
        if cached is None:
            raise _not_published(entry)
        _logger.info("Loading unpublished %s from the Hugging Face cache: %s", entry.name, cached)
        read_safetensors_header(cached)
        return ResolvedWeights(cached, "hf-cache", None)
    path = _download(repo, filename, name, cache_dir)
    read_safetensors_header(path)
    digest = _check_hash(path, entry.sha256, entry.name) if own_repo else None
    return ResolvedWeights(path, "hf-hub", digest)


def resolve_cfg_weights(
    cfg: Any, cache_dir: str | os.PathLike[str] | None = None
) -> ResolvedWeights | None:
    """Resolve the weights for a timm ``PretrainedCfg`` of a zoo architecture.

    Returns ``None`` when timm should load by itself: in-memory ``state_dict`` weights, or a cfg
    that came from a ``hf-hub:``/``local-dir:`` config.
    """
    if cfg.state_dict is not None or cfg.source in ("hf-hub", "local-dir"):
        return None
    entry = CATALOG.get(f"{cfg.architecture}.{cfg.tag}") if cfg.tag else None
    if entry is None and not (cfg.file or cfg.hf_hub_id):
        raise UnknownNameError(
            catalog.unknown_name_message(f"{cfg.architecture}.{cfg.tag}", list(CATALOG))
        )
    return resolve_weights(
        entry,
        file=cfg.file or None,
        hf_hub_id=cfg.hf_hub_id or None,
        hf_hub_filename=cfg.hf_hub_filename or None,
        cache_dir=cache_dir,
    )


# ------------------------------------------------------------------------------------------------
# Key and shape checks


@cache
def _meta_model_cached(timm_arch: str, args_json: str) -> torch.nn.Module:
    import timm

    # On the meta device: shapes only, no memory and no initialisation cost (ViT-B, R152). A JSON
    # key, because model_args may hold lists (e.g. ResNet layers), which a tuple key cannot hash.
    with torch.device("meta"):
        return timm.create_model(timm_arch, **json.loads(args_json))


def meta_model(
    timm_arch: str, num_classes: int | None = None, model_args: Mapping[str, Any] | None = None
) -> torch.nn.Module:
    """``timm.create_model(timm_arch, num_classes=..., **model_args)`` on the meta device, cached
    and shared: for reading structure (keys, shapes, parameter count, ``num_features``), never for
    computing or modifying. ``num_classes=None`` keeps timm's default head."""
    args = dict(model_args or {})
    if num_classes is not None:
        args["num_classes"] = int(num_classes)
    return _meta_model_cached(timm_arch, json.dumps(_jsonable(args), sort_keys=True))


def expected_shapes(
    timm_arch: str, num_classes: int = 0, model_args: Mapping[str, Any] | None = None
) -> Mapping[str, tuple[int, ...]]:
    """Keys and shapes of ``timm.create_model(timm_arch, num_classes=..., **model_args)``."""
    model = meta_model(timm_arch, num_classes, model_args)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def compare_keys(
    found: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]
) -> tuple[list[str], list[str], list[str]]:
    """Keys of ``found`` against ``expected`` shapes: (missing, unexpected, shape-mismatched), each
    in its mapping's order. The one comparison behind every "does not fit" error (hub files and the
    official training-checkpoint importers), which differ only in how they name and word the keys."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k])]
    return missing, unexpected, wrong


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    *,
    what: str,
    target: str,
) -> None:
    """Raise :class:`ArchitectureMismatchError` naming the keys that do not fit ``expected``.

    ``what`` names the weights (a file, a checkpoint), ``target`` the architecture.
    """
    missing, unexpected, wrong_keys = compare_keys(state_dict, expected)
    wrong = [f"{k} {tuple(state_dict[k].shape)} (expected {expected[k]})" for k in wrong_keys]
    if not (missing or unexpected or wrong):
        return
    parts = [f"{what} does not fit {target}:"]
    if wrong:
        parts.append(f"  shape mismatch: {_listing(wrong)}")
    if missing:
        parts.append(f"  missing keys: {_listing(missing)}")
    if unexpected:
        parts.append(f"  unexpected keys: {_listing(unexpected)}")
    if any(k.split(".")[0] in ("fc", "head", "fc_norm") for k in unexpected):
        parts.append(
            "  The file carries a classifier head: it looks like a fine-tuned or supervised model, "
            "not this self-supervised backbone."
        )
    parts.append(
        "  Check that the weights belong to this architecture and checkpoint (a different depth or "
        "width gives shape mismatches); files from the official releases must be converted first "
        "with `python -m selfsup_zoo.convert`."
    )
    raise ArchitectureMismatchError("\n".join(parts))


# ------------------------------------------------------------------------------------------------
# Hub folders


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
    import timm

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
    import timm

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


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _save_safetensors_atomic(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save

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
    model_args: dict | None = None,
    pretrained_cfg: dict | None = None,
    checkpoint: str | None = None,
    provenance: dict | None = None,
) -> HubFolder:
    """Write ``config.json`` + ``model.safetensors`` + ``README.md`` that plain timm loads.

    ``architecture`` is timm's own architecture (``resnet50``, ``vit_small_patch16_224``; a zoo
    name such as ``care_resnet50`` is translated). With ``checkpoint`` (a catalog name) the
    pretrained cfg comes from the catalog and the zoo tag is recorded; ``pretrained_cfg`` entries
    override it. Before anything is written, the state dict is checked key for key and shape for
    shape against ``timm.create_model(architecture, num_classes=<cfg num_classes>, **model_args)``,
    so that the folder loads with ``timm.create_model('local-dir:<folder>', pretrained=True)``.
    """
    from timm.models import PretrainedCfg

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
        "num_features": int(model.num_features),
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
        text = json.dumps(_jsonable(config), indent=2)
    except TypeError as e:
        raise ValueError(f"provenance and model_args must be JSON-serialisable: {e}") from None
    atomic_write_text(out / "config.json", text + "\n")
    from .cards import render_model_card  # late: only this path needs the cards module

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
    """
    entry = catalog.get_entry(name)
    src = Path(folder.path if isinstance(folder, HubFolder) else folder)
    read_safetensors_header(src / WEIGHTS_FILENAME)
    dest = weights_dir() / entry.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=dest.parent))
    try:
        for item in src.iterdir():
            if item.is_file():
                shutil.copy2(item, staging / item.name)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest / WEIGHTS_FILENAME
