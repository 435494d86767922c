"""Training checkpoints on disk: the format, atomic save, checked load, listing and pruning.

A checkpoint is one ``torch.save`` file ``<run>/checkpoints/step_<N:09d>.pt`` holding a plain dict
(tensors, numbers, strings, lists, tuples, dicts; the recipe as a JSON string), so it loads with
``torch.load(weights_only=True)`` and torch's default allow-list: nothing is added to it, and
:func:`save_checkpoint` refuses a payload that would need an addition (a numpy array, a dataclass)
before it reaches the disk. Keys (format ``selfsup_zoo.training.checkpoint/1``):

``format``, ``recipe`` (JSON), ``step``, ``epoch``, ``steps_per_epoch``, ``total_steps``,
``world_size``, ``method`` (state dict), ``optimizer``, ``scaler`` (``{}`` without fp16), ``rng``
(one entry per rank), ``num_replaced``, ``wall_time_s``, ``git_commit``, ``complete`` (True) and,
in checkpoints written since the provenance was recorded, ``provenance`` (a dict of strings and
numbers) and, since the data fingerprint was recorded, ``data`` (``fingerprint``, ``images``,
``root`` of the training image folder). Readers treat ``provenance`` and ``data`` as optional, so
older checkpoints load unchanged.

Files are written to a temporary ``.<name>.tmp`` in the same folder, fsynced and renamed, so a crash
never leaves a half-written file under the final name; a damaged file (cut off while copied) is
still detected on load, and :func:`find_latest_checkpoint` falls back to the previous one. A file
that torch's weights-only unpickler refuses for what it would build (an official CARE/SERE file,
any foreign pickle) is not damage: :func:`load_checkpoint` refuses it with the converters' "unsafe
to unpickle" message and, when it is an official file, names the ``python -m selfsup_zoo.convert``
command that reads it. A save
that fails (disk full, file size limit, quota) removes its temporary file, leaves the previous
checkpoints untouched and raises :class:`CheckpointWriteError` naming the file, the space it needed
and what to do.
"""

from __future__ import annotations

import errno
import logging
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from selfsup_zoo._io import atomic_write
from selfsup_zoo.convert import looks_like_care, looks_like_sere
from selfsup_zoo.convert.loading import (
    is_unsafe_pickle_error,
    load_official,
    unsafe_checkpoint_error,
)
from selfsup_zoo.errors import UnsafeCheckpointError

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "CheckpointWriteError",
    "UnsafeTrainingCheckpointError",
    "checkpoint_path",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "find_latest_checkpoint",
    "prune_checkpoints",
    "remove_stale_temp_files",
]

CHECKPOINT_FORMAT = "selfsup_zoo.training.checkpoint/1"
_FOLDER = "checkpoints"
_PREFIX = "step_"
_SUFFIX = ".pt"
_REQUIRED = ("recipe", "step", "method", "optimizer", "complete")
# Scalars torch's weights_only unpickler accepts without an allow-list entry. Exact types: a
# subclass (``torch.__version__`` is a ``TorchVersion(str)``) pickles as its own class.
_PLAIN_SCALARS = (str, int, float, bool, type(None))


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing, truncated, corrupt, or from another run)."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (no space, file size limit, quota, I/O error)."""


class UnsafeTrainingCheckpointError(CheckpointError, UnsafeCheckpointError):
    """A file given as a training checkpoint that needs objects unsafe to unpickle: refused.

    Both a :class:`CheckpointError` (callers that skip unusable checkpoints skip it) and the
    converters' :class:`~selfsup_zoo.errors.UnsafeCheckpointError`.
    """


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where the checkpoint after global step ``step`` of a run lives."""
    return Path(run_dir) / _FOLDER / f"{_PREFIX}{step:09d}{_SUFFIX}"


def _check_plain(value: object, where: str) -> None:
    """Raise TypeError when ``value`` holds anything but plain containers, numbers and tensors."""
    if isinstance(value, dict) and type(value) in (dict, OrderedDict):  # state dicts: OrderedDict
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"checkpoint key {where}[{key!r}] is a {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not (isinstance(value, torch.Tensor) or type(value) in _PLAIN_SCALARS):
        raise TypeError(
            f"checkpoint entry {where} is a {type(value).__name__}: only dicts, lists, tuples, "
            "strings, numbers and tensors load with torch.load(weights_only=True)"
        )


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write a checkpoint atomically: temp file in the same folder, fsync, rename, fsync the folder.

    Args:
        state: the checkpoint dict (see the module docstring); checked to hold plain data only.
        path: the final file name (its folder is created).
    """
    _check_plain(state, "state")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda f: torch.save(state, f))
    except OSError as err:  # the temporary file is already gone (atomic_write removes it)
        raise CheckpointWriteError(_write_failure(path, state, err)) from err
    except RuntimeError as err:
        # torch.save's zip writer turns the OSError of a failed write into a RuntimeError
        # ("unexpected pos ...") whose context is that OSError
        cause = _os_error_in(err)
        if cause is None:
            raise
        raise CheckpointWriteError(_write_failure(path, state, cause)) from err


def _os_error_in(err: BaseException) -> OSError | None:
    """The first OSError in the cause/context chain of ``err``, if any."""
    seen: BaseException | None = err
    for _ in range(8):  # a short chain; guards against a cycle
        if seen is None:
            return None
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _payload_bytes(value: object) -> int:
    """The tensor bytes of a checkpoint payload (a lower bound of its file size)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_payload_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_payload_bytes(v) for v in value)
    return 0


def _write_failure(path: Path, state: dict[str, Any], err: BaseException) -> str:
    """The message of a failed save: the file, the space it needed, the space left, what to do."""
    needed = _payload_bytes(state)
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free there now"
    except OSError:
        free = "free space unknown"
    code = getattr(err, "errno", None)
    if code == errno.ENOSPC:
        cause = "the disk is full"
    elif code == errno.EDQUOT:
        cause = "the disk quota is exhausted"
    elif code == errno.EFBIG:
        cause = "the file exceeds the size limit of this process or file system (ulimit -f)"
    else:
        cause = f"the write failed ({type(err).__name__}: {err})"
    return (
        f"could not write checkpoint {path}: {cause}. It needs about {needed / 2**20:.1f} MiB "
        f"({needed} bytes of tensors; {free}). Nothing was left half-written and the earlier "
        "checkpoints are intact: free space (or lower engine.keep_last), then continue with "
        "--resume auto"
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a training checkpoint with ``torch.load(weights_only=True)``.

    Args:
        path: the checkpoint file.
        map_location: where tensors go (default: the CPU).

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, not a training checkpoint of this
            package or incomplete.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError/EOFError/UnpicklingError/... on damage
        if is_unsafe_pickle_error(err):
            # not damage: a complete pickle that would build objects outside the allow-list
            refusal = unsafe_checkpoint_error(path, err)
            raise UnsafeTrainingCheckpointError(f"{refusal}{_convert_hint(path)}") from None
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: {err}). "
            "It was probably cut off while being written or copied; delete it and resume from the "
            "previous checkpoint (--resume auto does this automatically)."
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a selfsup_zoo training checkpoint (format "
            f"{state.get('format') if isinstance(state, dict) else type(state)})"
            f"{_convert_hint(path, state)}"
        )
    missing = [k for k in _REQUIRED if k not in state]
    if missing or state["complete"] is not True:
        raise CheckpointError(f"checkpoint {path} is incomplete (missing {missing})")
    return state


def _official_method(obj: object) -> str | None:
    """``"care"`` or ``"sere"`` when a loaded object holds that method's network, else None."""
    if looks_like_sere(obj):  # checked first: a SERE file's student/teacher entries are explicit
        return "sere"
    if looks_like_care(obj):
        return "care"
    return None


def _convert_hint(path: Path, loaded: object = None) -> str:
    """The sentence naming the converter command when ``path`` is an official CARE/SERE file.

    Args:
        path: the refused file.
        loaded: what ``torch.load(weights_only=True)`` returned, or None when it refused the file
            (it is then read once more with the converters' allow-list, still weights-only).

    Returns:
        ``""`` for a file that is not an official one.
    """
    if loaded is None:
        try:
            loaded = load_official(path)
        except (UnsafeCheckpointError, OSError, RuntimeError, EOFError):
            return ""
    method = _official_method(loaded)
    if method is None:
        return ""
    return (
        f" It looks like an official {method.upper()} checkpoint, not a training checkpoint of "
        f"this package: convert it with `python -m selfsup_zoo.convert {method} {path} "
        "<out_dir>` (a hub folder timm loads)."
    )


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first (by step); files with other names are ignored."""
    folder = Path(run_dir) / _FOLDER
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        name = p.name
        if name.startswith(_PREFIX) and name.endswith(_SUFFIX):
            try:
                found.append((int(name[len(_PREFIX) : -len(_SUFFIX)]), p))
            except ValueError:
                continue
    return [p for _, p in sorted(found)]


def find_latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of a run that loads, and its contents; None when there is none.

    Damaged newer files are logged and skipped, so a run resumes from the last good state.
    """
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as err:
            logger.error("%s -- falling back to the previous checkpoint", err)
    return None


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (at least one is always kept)."""
    for old in list_checkpoints(run_dir)[: -max(keep_last, 1)]:
        old.unlink(missing_ok=True)


def remove_stale_temp_files(run_dir: str | Path) -> None:
    """Delete the temporary files of saves that a crash interrupted (``.<name>.tmp``)."""
    folder = Path(run_dir) / _FOLDER
    if folder.is_dir():
        for stale in folder.glob(".*.tmp"):
            stale.unlink()
