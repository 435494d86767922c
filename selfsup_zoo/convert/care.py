"""Official CARE checkpoints (ChongjianGE/CARE) -> timm ``ResNet`` keys.

This module is the one owner of the official key layout (``docs/methods/care.md`` §1.3): the
prefixes, the parts a timm ``ResNet`` does not have, and the mapping between the official keys and
``CareMethod.state_dict()`` keys (:func:`official_key`, :func:`from_official_key`,
:func:`to_official_state_dict`, :func:`from_official_state_dict`), which the training code's
official-checkpoint importer uses.

Three layouts are accepted by the converter (``docs/methods/care.md`` §1.3, §2):

* the full pre-training checkpoint ``{start_epoch, model, optimizer}``, ``model`` holding the
  DDP-wrapped CARE module (``module.student_encoder.*`` / ``module.teacher_encoder.*``, each with
  the T-stream ``trans.*`` and the heads ``fc1.*`` / ``fc2.*``). The **student** encoder is
  exported by default: it is what the official linear evaluation loads;
* a backbone-only state dict (optionally under ``state_dict``/``model``, with ``module.`` /
  ``encoder.`` / ``student_encoder.`` prefixes);
* the linear-evaluation model ``{..., classifier: {module.encoder.*, module.classifier.0/1.*}}``,
  whose Linear(2048, 1000) + BatchNorm1d(1000) is folded into timm's ``fc``.

The encoder's keys are timm's by identity once the prefix is gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConversionError
from ..shapes import compare_keys
from .common import (
    Conversion,
    match_architecture,
    resolve_checkpoint_name,
    state_dict_keys,
    strip_prefix,
)

__all__ = [
    "STUDENT_PREFIX",
    "TEACHER_PREFIX",
    "ENCODER_PREFIXES",
    "T_STREAM_AND_HEAD_PREFIXES",
    "official_key",
    "from_official_key",
    "to_official_state_dict",
    "from_official_state_dict",
    "fold_linear_bn",
    "convert_care",
    "looks_like_care",
]

# --------------------------------------------------------------------------------------------------
# the official key layout (docs/methods/care.md §1.3)
# --------------------------------------------------------------------------------------------------

# The DDP-wrapped official ``CARE`` module: one prefix per network. Student = online network (the
# one the official linear evaluation loads), teacher = its EMA.
STUDENT_PREFIX = "module.student_encoder."
TEACHER_PREFIX = "module.teacher_encoder."
ENCODER_PREFIXES = {"student": STUDENT_PREFIX, "teacher": TEACHER_PREFIX}
# What an official encoder has besides its ResNet: the T-stream and the two MLP heads. Every other
# key below an encoder prefix is a timm ``ResNet`` key by identity (``docs/methods/care.md`` §1.4).
T_STREAM_AND_HEAD_PREFIXES = ("trans.", "fc1.", "fc2.")
# ``CareMethod`` keeps the ResNet of each network under this name (a timm model of its own).
_BACKBONE = "backbone."


def official_key(name: str) -> str:
    """A ``CareMethod.state_dict()`` key -> the official key.

    Args:
        name: ``student.<rest>`` or ``teacher.<rest>``, ``<rest>`` being ``backbone.<timm key>`` or
            a key under ``trans.`` / ``fc1.`` / ``fc2.``.

    Returns:
        ``module.student_encoder.<K>`` / ``module.teacher_encoder.<K>``, ``<K>`` being ``<rest>``
        without ``backbone.``.

    Raises:
        ValueError: ``name`` is not a ``CareMethod`` state-dict key.
    """
    net, _, rest = name.partition(".")
    if net not in ENCODER_PREFIXES or not rest:
        raise ValueError(f"not a CareMethod state-dict key: {name!r}")
    if rest.startswith(_BACKBONE):
        rest = rest[len(_BACKBONE) :]
    elif not rest.startswith(T_STREAM_AND_HEAD_PREFIXES):
        raise ValueError(f"not a CareMethod state-dict key: {name!r}")
    return ENCODER_PREFIXES[net] + rest


def from_official_key(key: str) -> str:
    """An official key -> the ``CareMethod.state_dict()`` key; the inverse of :func:`official_key`.

    Args:
        key: ``module.student_encoder.<K>`` or ``module.teacher_encoder.<K>``; a missing
            ``module.`` prefix (a checkpoint saved without DDP) is accepted.

    Returns:
        ``student.<K>`` / ``teacher.<K>`` for T-stream and head keys, ``student.backbone.<K>`` /
        ``teacher.backbone.<K>`` for the ResNet's.

    Raises:
        ValueError: ``key`` is not below either encoder prefix.
    """
    if not key.startswith("module."):
        key = "module." + key
    for ours, prefix in ENCODER_PREFIXES.items():
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            if not rest:
                break
            if rest.startswith(T_STREAM_AND_HEAD_PREFIXES):
                return f"{ours}.{rest}"
            return f"{ours}.{_BACKBONE}{rest}"
    raise ValueError(f"not an official CARE key: {key!r}")


def to_official_state_dict(
    source: nn.Module | Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """A ``CareMethod``'s state in the official ``model`` layout (902 entries for R50).

    Args:
        source: a ``CareMethod`` or its ``state_dict()``.

    Returns:
        The same tensors (sharing storage) under their official keys, in the method's order.
    """
    state = source.state_dict() if isinstance(source, nn.Module) else source
    return {official_key(k): v for k, v in state.items()}


def _short_list(items: list[str], limit: int = 20) -> str:
    head = ", ".join(items[:limit])
    return head + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")


def from_official_state_dict(
    official: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], target: str
) -> dict[str, torch.Tensor]:
    """An official ``model`` state dict -> ``CareMethod`` keys, checked strictly against shapes.

    Args:
        official: the ``model`` entry of an official pre-training checkpoint.
        expected: ``CareMethod.state_dict()`` key -> shape of the model to load into.
        target: how the error message names that model, e.g. ``"CareMethod('resnet50')"``.

    Returns:
        The official tensors under ``CareMethod`` keys, in the order of ``expected``.

    Raises:
        ValueError: any missing, unexpected or mis-shaped entry; the message names official keys.
    """
    ours: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in official.items():
        try:
            ours[from_official_key(key)] = value
        except ValueError:
            unexpected.append(key)
    missing_keys, extra_keys, wrong_keys = compare_keys(ours, expected)
    unexpected += sorted(official_key(k) for k in extra_keys)
    missing = sorted(official_key(k) for k in missing_keys)
    mismatched = [
        f"{official_key(k)} {tuple(ours[k].shape)} vs model {tuple(expected[k])}"
        for k in wrong_keys
    ]
    if missing or unexpected or mismatched:
        msg = [f"official CARE checkpoint does not match {target}"]
        if missing:
            msg.append(f"missing {len(missing)}: {_short_list(missing)}")
        if unexpected:
            msg.append(f"unexpected {len(unexpected)}: {_short_list(unexpected)}")
        if mismatched:
            msg.append(f"shape mismatch {len(mismatched)}: {_short_list(mismatched)}")
            if any("pos_emb" in m for m in mismatched):
                msg.append("(position embeddings differ: official weights need img_size 209-224)")
        raise ValueError("; ".join(msg))
    return {k: ours[k] for k in expected}


# --------------------------------------------------------------------------------------------------
# conversion to a timm ResNet
# --------------------------------------------------------------------------------------------------

# Parts of the official module that timm's ResNet does not have: T-stream and projection heads
# (pre-training) or the unused random Linear(2048, 128) of the evaluation encoder.
_TRAINING_ONLY = (*T_STREAM_AND_HEAD_PREFIXES, "fc.0.")
# BatchNorm1d default of the official linear classifier (nn.BatchNorm1d(1000)).
_BN_EPS = 1e-5


# A key every ResNet has (timm's and the official one alike), whatever the prefix.
_RESNET_MARKER = "layer1.0.conv1.weight"


def _encoder_only(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    kept = {k: v for k, v in state.items() if not k.startswith(_TRAINING_ONLY)}
    dropped = sorted({k.split(".")[0] for k in state if k.startswith(_TRAINING_ONLY)})
    return kept, dropped


def fold_linear_bn(
    weight: torch.Tensor, bias: torch.Tensor, bn: Mapping[str, torch.Tensor], eps: float = _BN_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold eval-mode ``BatchNorm1d(Linear(x))`` into one Linear (done in float64)."""
    w, b = weight.double(), bias.double()
    scale = bn["weight"].double() / torch.sqrt(bn["running_var"].double() + eps)
    folded_w = scale[:, None] * w
    folded_b = scale * (b - bn["running_mean"].double()) + bn["bias"].double()
    return folded_w.to(weight.dtype), folded_b.to(bias.dtype)


def _number(value: object) -> float | int | None:
    """A scalar the official loop saved (int, float, or a 0-d tensor: its top-1 is all-reduced)
    as a JSON-friendly number; anything else is None."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _int_or_none(value: object) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _unwrap(obj: Any) -> Any:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def looks_like_care(obj: object) -> bool:
    """Whether a loaded file holds a CARE network: its encoders' prefixes, or ResNet keys.

    Args:
        obj: the loaded checkpoint.

    Returns:
        True for every layout :func:`convert_care` reads (and for any ResNet state dict).
    """
    return any(
        "student_encoder." in k or "teacher_encoder." in k or k.endswith(_RESNET_MARKER)
        for k in state_dict_keys(obj)
    )


def convert_care(
    obj: Any, *, checkpoint: str | None = None, which: str | None = None, what: str = "checkpoint"
) -> Conversion:
    """Map a loaded official CARE checkpoint to a timm state dict (see the module docstring)."""
    if not isinstance(obj, dict):
        raise ConversionError(f"{what}: expected a dict checkpoint, got {type(obj).__name__}.")
    which = which or "student"
    if which not in ("student", "teacher"):
        raise ConversionError(f"--which must be 'student' or 'teacher', not {which!r}.")
    notes: list[str] = []
    provenance: dict[str, Any] = {"method": "care"}
    epochs: int | None = None
    num_classes = 0

    classifier = obj.get("classifier")
    if isinstance(classifier, dict) and "module.classifier.0.weight" in classifier:
        if which != "student":
            raise ConversionError(
                f"{what} is a linear-evaluation model: it holds only the student encoder."
            )
        encoder, dropped = _encoder_only(strip_prefix(classifier, "module.encoder."))
        bn = strip_prefix(classifier, "module.classifier.1.")
        missing_bn = {"weight", "bias", "running_mean", "running_var"} - set(bn)
        if missing_bn:
            raise ConversionError(
                f"{what}: linear classifier has no BatchNorm1d ({sorted(missing_bn)} missing)."
            )
        fc_w, fc_b = fold_linear_bn(
            classifier["module.classifier.0.weight"], classifier["module.classifier.0.bias"], bn
        )
        state = dict(encoder, **{"fc.weight": fc_w, "fc.bias": fc_b})
        num_classes = int(fc_w.shape[0])
        notes.append(
            "linear-evaluation model: frozen student encoder + Linear/BatchNorm1d "
            "classifier folded into timm's fc"
        )
        provenance.update(
            format="linear-evaluation model",
            network="student",
            linear_eval_epoch=_number(obj.get("start_epoch")),
            best_top1=_number(obj.get("best_top1")),
        )
    else:
        model = obj.get("model") if isinstance(obj.get("model"), dict) else None
        full_prefix = None
        if model is not None:
            ddp_prefix = ENCODER_PREFIXES[which]
            for prefix in (ddp_prefix, ddp_prefix[len("module.") :]):
                if any(k.startswith(prefix) for k in model):
                    full_prefix = prefix
                    break
            if full_prefix is None and any("_encoder." in k for k in model):
                raise ConversionError(f"{what} has no {which} encoder in 'model'.")
        if model is not None and full_prefix is not None:
            state, dropped = _encoder_only(strip_prefix(model, full_prefix))
            epochs = _int_or_none(obj.get("start_epoch"))
            notes.append(
                f"full pre-training checkpoint: exported the {which} encoder"
                + (" (what the official linear evaluation uses)" if which == "student" else "")
            )
            provenance.update(
                format="pre-training checkpoint", network=which, pretrain_epochs=epochs
            )
        else:
            flat = _unwrap(obj)
            if flat is obj and not all(isinstance(v, torch.Tensor) for v in flat.values()):
                raise ConversionError(
                    f"{what}: not a CARE checkpoint (top-level keys: {sorted(obj)[:10]})."
                )
            for prefix in ("module.", "student_encoder.", "encoder.", "backbone."):
                if flat and all(k.startswith(prefix) for k in flat):
                    flat = strip_prefix(flat, prefix)
            if "fc.weight" in flat:
                raise ConversionError(
                    f"{what} has a classifier (fc.weight {tuple(flat['fc.weight'].shape)}): it "
                    "looks like a fine-tuned or supervised ResNet, not a CARE backbone. Only the "
                    "official pre-training checkpoint, backbone and linear-evaluation files are "
                    "converted."
                )
            state, dropped = _encoder_only(flat)
            if which != "student":
                notes.append("backbone-only file: --which does not apply")
            notes.append("backbone-only state dict")
            provenance.update(format="backbone state dict", network="unknown")
        if dropped:
            notes.append(f"dropped training-only parts: {', '.join(dropped)}")

    arch = match_architecture(state, "care", num_classes, what, checkpoint)
    name, candidates = resolve_checkpoint_name(checkpoint, arch, num_classes, epochs)
    return Conversion(
        state_dict=state,
        arch=arch,
        checkpoint=name,
        candidates=candidates,
        num_classes=num_classes,
        notes=notes,
        provenance=provenance,
    )
