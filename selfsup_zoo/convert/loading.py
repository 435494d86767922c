"""Reading the authors' checkpoint files without unpickling arbitrary objects.

Every official file is read with ``torch.load(weights_only=True)``. Beyond what that loader accepts
by default (tensors, numbers, strings, containers), the official training loops pickle two things,
and exactly these are allow-listed, only for the duration of one :func:`load_official` call:

* ``argparse.Namespace``: SERE (DINO/iBOT) full checkpoints keep their command line under ``args``;
* numpy ``float64`` scalars: SERE writes the learning rate and weight decay of every step from numpy
  schedules into the optimizer's param groups (``docs/methods/sere.md`` §5.2, §5.5), so
  ``optimizer.param_groups[i]["lr"]`` pickles as numpy's scalar reconstructor applied to a float64
  dtype. Both are replaced by checked stand-ins: the dtype constructor accepts nothing but a
  float64 descriptor and the scalar reconstructor nothing but 8 bytes of one, returned as a Python
  ``float`` (exact). Files written under numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) both
  load.

After loading, the object is walked: a numpy object left anywhere (which the stand-ins never return)
refuses the file. :func:`unsafe_checkpoint_error` is the one refusal message for a file that needs
anything else; the training-checkpoint exporter uses it too.
"""

from __future__ import annotations

import argparse
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UnsafeCheckpointError

__all__ = ["load_official", "unsafe_checkpoint_error", "is_unsafe_pickle_error"]

_FLOAT64 = np.dtype(np.float64)


def _float64_dtype(spec: object, align: object = False, copy: object = True) -> np.dtype[Any]:
    """Stand-in for ``numpy.dtype`` while unpickling: builds a float64 descriptor and nothing else.

    Args:
        spec: the pickled type string; only ``"f8"`` is accepted.
        align: numpy's ``align`` flag, as pickled (``False``).
        copy: numpy's ``copy`` flag, as pickled (``True``: a private copy, so the state that
            unpickling sets next never touches numpy's shared float64 descriptor).

    Returns:
        A float64 ``numpy.dtype``.

    Raises:
        pickle.UnpicklingError: any other dtype.
    """
    if spec != "f8" or align is not False or copy is not True:
        raise pickle.UnpicklingError(
            f"numpy dtype {spec!r} (align={align!r}, copy={copy!r}): only float64 scalars are "
            "allowed in official checkpoints"
        )
    return np.dtype("f8", align=False, copy=True)


def _float64_scalar(dtype: object, data: object = None) -> float:
    """Stand-in for numpy's scalar reconstructor: one float64, returned as a Python ``float``.

    Args:
        dtype: the descriptor made by :func:`_float64_dtype` (either byte order).
        data: the scalar's 8 raw bytes.

    Returns:
        The value (float64 -> Python float is exact).

    Raises:
        pickle.UnpicklingError: anything but a float64 and 8 bytes.
    """
    if not (isinstance(dtype, np.dtype) and dtype.kind == "f" and dtype.itemsize == 8):
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r}: only float64 is allowed")
    if not isinstance(data, bytes) or len(data) != 8:
        raise pickle.UnpicklingError("numpy float64 scalar without its 8 bytes of data")
    return float(np.frombuffer(data, dtype=dtype)[0])


# What the official files need, under the names their pickles use (numpy 2.x and 1.x module paths).
# The dtype's class is listed because unpickling then sets the descriptor's state (byte order).
_OFFICIAL_GLOBALS: list[Any] = [
    argparse.Namespace,
    (_float64_dtype, "numpy.dtype"),
    (type(_FLOAT64), f"numpy.dtypes.{type(_FLOAT64).__name__}"),
    (_float64_scalar, "numpy._core.multiarray.scalar"),
    (_float64_scalar, "numpy.core.multiarray.scalar"),
]


def unsafe_checkpoint_error(
    path: str | os.PathLike[str], err: BaseException
) -> UnsafeCheckpointError:
    """The refusal for a file that needs objects outside the allow-list to unpickle.

    Args:
        path: the refused file.
        err: what ``torch.load(weights_only=True)`` raised, or an error raised from it.

    Returns:
        The error to raise, naming the first global or object the file needed (torch's own advice to
        turn the safe loader off is not repeated).
    """
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, pickle.UnpicklingError):
        cause = cause.__cause__  # e.g. a CheckpointError raised from torch's refusal
    text = str(cause if cause is not None else err)
    # torch wraps the reason in advice to turn the safe loader off: keep only the reason.
    advice = ("Weights only load failed", "(1)", "(2)", "Check the documentation of torch.load")
    reasons = [
        line.strip().replace("WeightsUnpickler error:", "").strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(advice)
    ]
    detail = reasons[0] if reasons else type(cause if cause is not None else err).__name__
    detail = detail.split(" Please use `torch.serialization", 1)[0].rstrip(".")
    return UnsafeCheckpointError(
        f"Refusing to load {path}: it needs objects that are unsafe to unpickle ({detail}). "
        "Official CARE/SERE checkpoints and this package's own only hold tensors, numbers, numpy "
        "float64 scalars and an argparse.Namespace; this file is something else, or has been "
        "tampered with. It was not loaded. Check where it came from (and its sha256) before "
        "anything else."
    )


def is_unsafe_pickle_error(err: BaseException) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused a file for what it would unpickle.

    Args:
        err: the exception ``torch.load`` raised (or one chained from it).

    Returns:
        True for the weights-only unpickler's refusal, False for damage (truncation, bad zip...).
    """
    current: BaseException | None = err
    while current is not None:
        if isinstance(current, pickle.UnpicklingError) and (
            "Weights only load failed" in str(current) or "WeightsUnpickler" in str(current)
        ):
            return True
        current = current.__cause__
    return False


def _leaves(obj: object, depth: int = 0) -> Iterator[object]:
    """Every object in the loaded structure (containers and Namespace attributes included)."""
    yield obj
    if depth > 64:  # a weights-only pickle cannot build a cycle; deep nesting is not official
        return
    if isinstance(obj, dict):
        children: Any = list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = obj
    elif isinstance(obj, argparse.Namespace):
        children = list(vars(obj).values())
    else:
        return
    for child in children:
        yield from _leaves(child, depth + 1)


def load_official(path: str | os.PathLike[str]) -> Any:
    """Read an official checkpoint with ``torch.load(weights_only=True)`` and a minimal allow-list.

    Args:
        path: the file (``.pth`` / ``.pth.tar``), tensors are mapped to the CPU.

    Returns:
        The loaded object; numpy float64 scalars (optimizer learning rates) come back as ``float``.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file needs anything beyond the allow-list (module docstring), or
            a numpy object was created anyway.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    try:
        with torch.serialization.safe_globals(_OFFICIAL_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise unsafe_checkpoint_error(path, e) from None
    stray = next((type(o) for o in _leaves(obj) if isinstance(o, (np.generic, np.dtype))), None)
    if stray is not None:
        raise unsafe_checkpoint_error(
            path, pickle.UnpicklingError(f"a {stray.__module__}.{stray.__qualname__} object")
        )
    return obj
