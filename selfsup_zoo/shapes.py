"""The structure of a timm architecture, and whether a state dict fits it.

:func:`meta_model` builds a timm model on the meta device (no memory, no initialisation), from
which :func:`expected_shapes` reads every key and shape; :func:`compare_keys` and
:func:`check_state_dict` hold a state dict against them. Used by the pretrained path (a file must
hold exactly its architecture's tensors), the hub-folder writer, the converters and the model cards
(parameter counts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

import timm
import torch

from .errors import ArchitectureMismatchError

__all__ = [
    "meta_model",
    "expected_shapes",
    "feature_dim",
    "compare_keys",
    "check_state_dict",
    "jsonable",
]


def jsonable(value: Any) -> Any:
    """``value`` with tuples turned into lists and mapping keys into strings, for ``json.dumps``.

    Args:
        value: a nest of mappings, sequences and scalars (model kwargs, pretrained cfgs).

    Returns:
        The same nest built from dicts, lists and the original scalars.
    """
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


@cache
def _meta_model_cached(timm_arch: str, args_json: str) -> torch.nn.Module:
    # On the meta device: shapes only, no memory and no initialisation cost (ViT-B, R152). A JSON
    # key, because model_args may hold lists (e.g. ResNet layers), which a tuple key cannot hash.
    with torch.device("meta"):
        model: torch.nn.Module = timm.create_model(timm_arch, **json.loads(args_json))
    return model


def meta_model(
    timm_arch: str, num_classes: int | None = None, model_args: Mapping[str, Any] | None = None
) -> torch.nn.Module:
    """``timm.create_model(timm_arch, num_classes=..., **model_args)`` on the meta device.

    Cached and shared: for reading structure (keys, shapes, parameter count, ``num_features``),
    never for computing or modifying.

    Args:
        timm_arch: a timm architecture (``resnet50``, ``vit_small_patch16_224``).
        num_classes: classifier size; None keeps timm's default head.
        model_args: further ``timm.create_model`` keyword arguments (JSON-serialisable).

    Returns:
        The model, every parameter and buffer on the meta device.
    """
    args = dict(model_args or {})
    if num_classes is not None:
        args["num_classes"] = int(num_classes)
    return _meta_model_cached(timm_arch, json.dumps(jsonable(args), sort_keys=True))


def expected_shapes(
    timm_arch: str, num_classes: int = 0, model_args: Mapping[str, Any] | None = None
) -> Mapping[str, tuple[int, ...]]:
    """Keys and shapes of ``timm.create_model(timm_arch, num_classes=..., **model_args)``.

    Args:
        timm_arch: a timm architecture.
        num_classes: classifier size (0: no classifier, pooled features).
        model_args: further ``timm.create_model`` keyword arguments.

    Returns:
        ``{state-dict key: shape}`` in the model's state-dict order.
    """
    model = meta_model(timm_arch, num_classes, model_args)
    # keep_vars: shapes only, so no detached copy of every tensor (most of a pretrained load's
    # Python time on a meta model)
    return {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}


def feature_dim(model: torch.nn.Module) -> int:
    """The pooled feature dimension of a timm model (its ``num_features`` attribute).

    Args:
        model: a timm ``ResNet``, ``VisionTransformer``, ... (meta device is fine).

    Returns:
        ``model.num_features``, e.g. 2048 for ResNet-50, 384 for ViT-S/16.
    """
    # A plain int attribute on timm's models; nn.Module's __getattr__ would type it as a tensor.
    value = vars(model).get("num_features")
    if not isinstance(value, int):
        raise TypeError(f"{type(model).__name__} has no integer num_features ({value!r})")
    return value


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def compare_keys(
    found: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]
) -> tuple[list[str], list[str], list[str]]:
    """Keys of ``found`` against ``expected`` shapes.

    The one comparison behind every "does not fit" error (hub files and the official
    training-checkpoint importers), which differ only in how they name and word the keys.

    Args:
        found: a state dict (any tensor shapes).
        expected: ``{key: shape}``, e.g. from :func:`expected_shapes`.

    Returns:
        ``(missing, unexpected, shape-mismatched)`` keys, each in its mapping's order.
    """
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

    Args:
        state_dict: the tensors to check.
        expected: ``{key: shape}`` of the architecture.
        what: names the weights in the message (a file, a checkpoint).
        target: names the architecture in the message.

    Raises:
        ArchitectureMismatchError: if a key is missing, unexpected or of another shape.
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
