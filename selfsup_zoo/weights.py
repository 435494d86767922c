"""Find and verify the zoo's weights: local weights directory, explicit files, the Hub.

Where ``pretrained=True`` looks for the weights of checkpoint ``<arch>.<tag>``, first hit wins:

1. an explicit file: ``pretrained_cfg_overlay=dict(file='.../model.safetensors')``;
2. the local weights directory, ``<weights dir>/<arch>.<tag>/model.safetensors``, where
   ``python -m selfsup_zoo.convert ... --install`` puts converted official releases. The folder is
   :func:`selfsup_zoo.paths.weights_root`: ``$SELFSUP_ZOO_WEIGHTS``, else
   ``<cache root>/weights`` with the cache root ``$SELFSUP_ZOO_CACHE``, else
   ``$XDG_CACHE_HOME/selfsup_zoo``, else ``~/.cache/selfsup_zoo``;
3. the Hugging Face Hub repo named in the catalog (its cache, progress bar and ``HF_HUB_OFFLINE``
   apply) once the catalog marks the checkpoint published, or a repo the caller names with
   ``pretrained_cfg_overlay=dict(hf_hub_id=...)``. For a checkpoint the catalog does not mark
   published, only the local Hugging Face cache is looked at (no network request), so a cache
   filled by hand or by a newer release still works offline.

Only safetensors files are accepted on this path: nothing is unpickled. A file's header and size are
checked before loading and its sha256 is compared with the catalog's when the catalog knows it
(:mod:`selfsup_zoo.models` then compares its keys and shapes with the architecture, and timm adapts
the classifier and ``in_chans`` as usual).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from timm.models import PretrainedCfg

from . import paths
from .catalog import (
    CATALOG,
    WEIGHTS_FILENAME,
    CatalogEntry,
    convert_command,
    unknown_name_message,
)
from .errors import (
    CorruptWeightsError,
    HashMismatchError,
    UnknownNameError,
    WeightsDownloadError,
    WeightsNotCachedError,
    WeightsNotPublishedError,
)
from .paths import WEIGHTS_DIR_ENV

_logger = logging.getLogger(__name__)

__all__ = [
    "WEIGHTS_DIR_ENV",
    "ResolvedWeights",
    "weights_dir",
    "installed_path",
    "file_sha256",
    "read_safetensors_header",
    "check_hash",
    "resolve_weights",
    "resolve_cfg_weights",
    "load_weights",
]


# ------------------------------------------------------------------------------------------------
# Local weights directory


def weights_dir() -> Path:
    """The local weights directory (:func:`selfsup_zoo.paths.weights_root`).

    Returns:
        ``$SELFSUP_ZOO_WEIGHTS`` when set, else ``<cache root>/weights`` (``$SELFSUP_ZOO_CACHE``,
        ``$XDG_CACHE_HOME/selfsup_zoo`` or ``~/.cache/selfsup_zoo``).
    """
    return paths.weights_root()


def installed_path(name: str) -> Path:
    """Where the weights of catalog checkpoint ``name`` live inside :func:`weights_dir`.

    Args:
        name: a catalog name, ``<arch>.<tag>``.

    Returns:
        ``<weights dir>/<name>/model.safetensors`` (which need not exist).
    """
    return weights_dir() / name / WEIGHTS_FILENAME


# ------------------------------------------------------------------------------------------------
# File checks

# safetensors dtype names -> torch dtypes; their element sizes check that the header's byte ranges
# agree with shapes and dtypes.
_TORCH_DTYPES = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I16": torch.int16,
    "U16": torch.uint16,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I32": torch.int32,
    "U32": torch.uint32,
    "F32": torch.float32,
    "I64": torch.int64,
    "U64": torch.uint64,
    "F64": torch.float64,
}
_DTYPE_BYTES = {name: dtype.itemsize for name, dtype in _TORCH_DTYPES.items()}
# A header larger than this is not a weights file (safetensors itself caps it at 100 MB).
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks (weights files are hundreds of MB).

    Args:
        path: the file.

    Returns:
        The 64-character lower-case hex digest.
    """
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

    A truncated download is reported as such rather than as a cryptic deserialisation error
    half-way through loading.

    Args:
        path: the ``.safetensors`` file.

    Returns:
        ``{tensor name: {"dtype", "shape", "data_offsets"}}`` (``__metadata__`` left out).

    Raises:
        CorruptWeightsError: the header is damaged, the file is a pickle, or the file is shorter or
            longer than the header says.
    """
    return _checked_header(Path(path))[0]


def _checked_header(path: Path) -> tuple[dict[str, Any], int]:
    """:func:`read_safetensors_header` and the byte offset where the tensor data starts."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _corrupt(path, f"only {size} bytes long")
        (header_len,) = struct.unpack("<Q", prefix)
        fits = header_len <= min(_MAX_HEADER_BYTES, size - 8)
        opens_json = f.read(1) == b"{"  # a safetensors header is a JSON object
        f.seek(8)
        # A zip (torch.save) or a raw pickle starts with "PK" or 0x80; a safetensors file can too
        # (its first byte is the header length's lowest byte), so only a file whose header does
        # not parse as safetensors is called a pickle.
        if (prefix[:2] == b"PK" or prefix[:1] == b"\x80") and not (fits and opens_json):
            raise CorruptWeightsError(
                f"{path} is a PyTorch pickle checkpoint, not a safetensors file. The pretrained "
                "path only reads safetensors (nothing is unpickled): convert an official release "
                "with `python -m selfsup_zoo.convert {care,sere} <file> <out_dir>`, or load a file "
                "that is already in timm's layout with `checkpoint_path=`."
            )
        if not fits:
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
    ranges: list[tuple[int, int, str]] = []
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
        ranges.append((int(begin), int(end), name))
    # As the format requires (and safetensors' own reader checks): the tensors tile the data with
    # no gap and no overlap, so no two mapped tensors share bytes (:func:`load_weights`).
    reached = 0
    for begin, end, name in sorted(ranges):
        if begin != reached:
            raise _corrupt(path, f"tensor {name!r} starts at byte {begin}, not at {reached}")
        reached = end
    if reached != data_len:
        raise _corrupt(
            path, f"the header describes {reached} bytes of tensor data, the file holds {data_len}"
        )
    return header, 8 + header_len


def check_hash(path: Path, expected: str | None, name: str) -> str | None:
    """Compare the sha256 of ``path`` with the one the catalog records for checkpoint ``name``.

    Args:
        path: the weights file.
        expected: the recorded hex digest; None or empty skips the check.
        name: the checkpoint, for the message.

    Returns:
        The verified digest, or None when there was nothing to compare with.

    Raises:
        HashMismatchError: the digests differ.
    """
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


def _as_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


def _cached(repo: str, filename: str, cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """The file from the local Hugging Face cache only (no network), or None."""
    # Imported here: huggingface_hub is heavy and only needed when a Hub repo is involved.
    from huggingface_hub import try_to_load_from_cache

    repo_id, revision = _split_revision(repo)
    found = try_to_load_from_cache(
        repo_id, filename, cache_dir=_as_path(cache_dir), revision=revision
    )
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
        path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=_as_path(cache_dir))
        return Path(path)
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

    Args:
        entry: the catalog checkpoint, or None for weights named only by ``file``/``hf_hub_id``.
        file: an explicit ``.safetensors`` file (wins over everything else).
        hf_hub_id: a Hub repo (``org/name[@revision]``) instead of the catalog's.
        hf_hub_filename: the file inside that repo (default: the catalog's, ``model.safetensors``).
        cache_dir: Hugging Face cache folder (default: huggingface_hub's).

    Returns:
        Where the weights were found, and their verified hash when the catalog knows it.

    Raises:
        WeightsNotPublishedError: an unpublished checkpoint with no local copy.
        WeightsNotCachedError: offline and not in the Hugging Face cache.
        WeightsDownloadError: the Hub refused the download.
        CorruptWeightsError: a damaged, truncated or non-safetensors file.
        HashMismatchError: the file is not the one the catalog records.
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
            digest = check_hash(local, entry.sha256, entry.name)
            _logger.info("Loading %s from the local weights directory: %s", entry.name, local)
            return ResolvedWeights(local, "weights-dir", digest)

    repo = hf_hub_id or (entry.hub_repo if entry is not None else None)
    if repo is None:
        raise ValueError("No weights source: give a catalog entry, a file or a Hub repo id.")
    # The catalog's own repo: held to the catalog's hash and publication flag (a mirror is not).
    own = entry if entry is not None and _split_revision(repo)[0] == entry.hub_repo else None
    filename = hf_hub_filename or (entry.hub_filename if entry is not None else WEIGHTS_FILENAME)
    if not filename.endswith(".safetensors"):
        raise CorruptWeightsError(
            f"{repo}/{filename}: the pretrained path only reads '.safetensors' files."
        )
    if own is not None and not own.published:
        # Not on the Hub as far as this release knows: never ask the network (it would only time
        # out or 404), but a Hugging Face cache filled by hand or by a newer release still serves.
        cached = _cached(repo, filename, cache_dir)
        if cached is None:
            raise _not_published(own)
        _logger.info("Loading unpublished %s from the Hugging Face cache: %s", own.name, cached)
        read_safetensors_header(cached)
        return ResolvedWeights(cached, "hf-cache", None)
    path = _download(repo, filename, name, cache_dir)
    read_safetensors_header(path)
    digest = check_hash(path, own.sha256, own.name) if own is not None else None
    return ResolvedWeights(path, "hf-hub", digest)


def resolve_cfg_weights(
    cfg: PretrainedCfg, cache_dir: str | os.PathLike[str] | None = None
) -> ResolvedWeights | None:
    """Resolve the weights for a timm ``PretrainedCfg`` of a zoo architecture.

    Args:
        cfg: the resolved ``timm.models.PretrainedCfg`` (architecture, tag, overlay fields).
        cache_dir: Hugging Face cache folder (default: huggingface_hub's).

    Returns:
        The weights (see :func:`resolve_weights`), or None when timm should load by itself:
        in-memory ``state_dict`` weights, or a cfg that came from a ``hf-hub:``/``local-dir:``
        config.

    Raises:
        UnknownNameError: a tag the catalog does not know and no explicit file or repo.
    """
    if cfg.state_dict is not None or cfg.source in ("hf-hub", "local-dir"):
        return None
    entry = CATALOG.get(f"{cfg.architecture}.{cfg.tag}") if cfg.tag else None
    if entry is None and not (cfg.file or cfg.hf_hub_id):
        raise UnknownNameError(unknown_name_message(f"{cfg.architecture}.{cfg.tag}", list(CATALOG)))
    return resolve_weights(
        entry,
        file=cfg.file or None,
        hf_hub_id=cfg.hf_hub_id or None,
        hf_hub_filename=cfg.hf_hub_filename or None,
        cache_dir=cache_dir,
    )


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file that :func:`resolve_weights` found, mapped, not read.

    The file is mapped copy-on-write (``MAP_PRIVATE``, PyTorch's own mmap loading mapping): a
    tensor's pages come from the page cache when first touched, an inference-only model shares
    them with every other process that maps the file, and a write (an optimiser step) copies the
    page it touches and never reaches the file. Loading thus costs no copy of the weights: for a
    ResNet-152 file (240 MB) it is about 5 ms instead of 25-150 ms (docs/weights.md §3). A tensor
    whose offset is not a multiple of its element size (possible in a file with 1- or 2-byte
    tensors) is copied instead.

    As with any mapping, the file must not be truncated in place while the model lives (replacing
    it, as the zoo's writers do with a rename, is safe).

    Args:
        path: The ``.safetensors`` file (checked again here: header, byte ranges, size).

    Returns:
        ``{name: tensor}`` on the CPU, in the file's order (nothing is unpickled).

    Raises:
        CorruptWeightsError: a damaged or truncated file.
    """
    path = Path(path)
    header, data_start = _checked_header(path)
    size = path.stat().st_size
    # shared=False is a private (copy-on-write) mapping; the stubs type the result loosely
    storage = cast(
        torch.UntypedStorage, torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    )
    state: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        dtype = _TORCH_DTYPES[info["dtype"]]  # the header check knows every name
        begin, end = (data_start + int(i) for i in info["data_offsets"])
        shape = [int(d) for d in info["shape"]]
        if begin % dtype.itemsize == 0:
            flat = [(end - begin) // dtype.itemsize]
            view = torch.empty(0, dtype=dtype).set_(storage, begin // dtype.itemsize, flat, [1])
            state[name] = view.view(shape)
        else:  # a misaligned tensor: an aligned copy of its bytes
            raw = torch.empty(0, dtype=torch.uint8).set_(storage, begin, [end - begin], [1])
            state[name] = raw.clone().view(dtype).reshape(shape)
    return state
