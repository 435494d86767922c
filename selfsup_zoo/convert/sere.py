"""The official SERE key layout (MCG-NKU/SERE, an iBOT fork), owned here, and its conversion.

Two consumers read the layout from this module: :func:`convert_sere` (official file -> timm
``VisionTransformer`` keys) and the training method's importer/exporter of full official
checkpoints (``selfsup_zoo.training.methods.sere.official``).

Official full checkpoint (§1.3, §5.5): ``student`` and ``teacher`` are
DDP state dicts, ``module.backbone.<ViT key>`` with the mask token ``masked_embed`` (student
only) and the four SERE relation heads inside the backbone, plus ``module.head.*`` (the iBOT head,
listing both ``last_layer`` and ``last_layer2``); ``ibot_loss`` holds the centres. The training
method keeps one branch as ``backbone.<timm key>``, ``masked_embed``, ``<SERE head>.*`` and
``head.*``: the ViT keys are timm's own (§1.4), only the mask token and the SERE heads move.

Conversion to timm (§1.8): pick ``teacher`` if present (DINO/iBOT/SERE report teacher results and
their "backbone" downloads are teacher weights), else ``student``, ``state_dict``, ``model`` or the
flat dict; strip ``module.``; keep ``backbone.*`` when present (drops the iBOT head); drop the mask
token and the four SERE heads; require exactly timm's ViT keys. A ``masked_embed`` key means the
weights are the student's (the teacher has no mask token).

Section numbers (§) refer to ``docs/methods/sere.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ConversionError
from .common import (
    Conversion,
    match_architecture,
    resolve_checkpoint_name,
    state_dict_keys,
    strip_prefix,
)

#: The four SERE relation heads, inside the official backbone (§1.3).
SERE_HEAD_NAMES: tuple[str, ...] = (
    "channel_sere",
    "pixel_sere",
    "channel_sere_local",
    "pixel_sere_local",
)
#: The student's mask token, inside the official backbone (§1.1).
MASK_TOKEN = "masked_embed"
#: Prefix DDP puts on every key of both official branches (the teacher too, §5.5).
DDP_PREFIX = "module."
#: Official prefixes of the ViT (with the mask token and SERE heads) and of the iBOT head.
BACKBONE_PREFIX = "backbone."
HEAD_PREFIX = "head."
#: The centre buffers of the official ``ibot_loss`` entry (§5.5); the accumulators are optional.
IBOT_LOSS_BUFFERS: tuple[str, ...] = ("center", "center2", "center_accum", "center2_accum")
#: The CLS and the patch projection of the iBOT head; one module when the head is shared (§2.1).
LAST_LAYER = "head.last_layer."
LAST_LAYER2 = "head.last_layer2."
#: ``torch.nn.utils.parametrizations.weight_norm`` names -> the deprecated ``weight_norm`` names
#: the official files use (§8 #19).
_PARAMETRIZATION_ALIASES = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}
_WEIGHT_NORM_NAMES = ("weight_g", "weight_v")


def training_key_to_official(key: str) -> str:
    """One key of a training branch -> its official name, without the DDP prefix.

    Args:
        key: ``backbone.<timm key>``, ``masked_embed``, ``<SERE head>.*`` or ``head.*``.

    Returns:
        The official key: the mask token and the SERE heads move under ``backbone.``.
    """
    if key.startswith(BACKBONE_PREFIX) or key.startswith(HEAD_PREFIX):
        return key
    return BACKBONE_PREFIX + key


def official_key_to_training(key: str) -> str:
    """One official key (DDP prefix already removed) -> the training branch's key.

    Args:
        key: ``backbone.*`` or ``head.*``; weight-norm parametrization names are accepted.

    Returns:
        The inverse of :func:`training_key_to_official`.

    Raises:
        KeyError: the key is neither ``backbone.*`` nor ``head.*``.
    """
    for alias, name in _PARAMETRIZATION_ALIASES.items():
        if key.endswith(alias):
            key = key[: -len(alias)] + name
    if key.startswith(HEAD_PREFIX):
        return key
    if key.startswith(BACKBONE_PREFIX):
        rest = key[len(BACKBONE_PREFIX) :]
        if rest == MASK_TOKEN or rest.split(".", 1)[0] in SERE_HEAD_NAMES:
            return rest
        return key
    raise KeyError(key)


def official_branch(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A training branch's state dict in the official layout (``module.`` keys, §5.5).

    Args:
        state: the branch's ``state_dict()`` (both ``last_layer`` names when the head is shared).

    Returns:
        The same tensors (not copied) under their official keys.
    """
    return {DDP_PREFIX + training_key_to_official(k): v for k, v in state.items()}


def training_branch(state: Mapping[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
    """An official branch (``student`` or ``teacher``) -> training keys.

    Args:
        state: keys with or without ``module.``, with the weight-norm names of either API.
        part: the branch's name, for the error message.

    Returns:
        The same tensors under the training branch's keys.

    Raises:
        ValueError: a key is neither ``backbone.*`` nor ``head.*``.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        bare = key[len(DDP_PREFIX) :] if key.startswith(DDP_PREFIX) else key
        try:
            converted[official_key_to_training(bare)] = value
        except KeyError:
            raise ValueError(
                f"{part}: unexpected key {key!r} (neither backbone.* nor head.*)"
            ) from None
    return converted


def merge_shared_last_layer(state: dict[str, torch.Tensor], part: str) -> None:
    """Fill both ``last_layer`` names of a shared head in place from whichever the file has.

    A shared iBOT head is one module under two names (§2.1): the official file lists both, a
    trimmed file may list one.

    Args:
        state: a branch in training keys (see :func:`training_branch`), modified in place.
        part: the branch's name, for the error message.

    Raises:
        ValueError: both names are present with different values (the file's head is unshared).
    """
    for suffix in _WEIGHT_NORM_NAMES:
        k1, k2 = LAST_LAYER + suffix, LAST_LAYER2 + suffix
        if k1 in state and k2 in state and not torch.equal(state[k1], state[k2]):
            raise ValueError(
                f"{part}: shared head but {k1} and {k2} differ (file has an unshared head?)"
            )
        if k2 in state and k1 not in state:
            state[k1] = state[k2]
        if k1 in state:
            state[k2] = state[k1]


# Keys every ViT has (timm's and the official one alike), whatever the prefix.
_VIT_MARKERS = ("blocks.0.attn.qkv.weight", "pos_embed")


def looks_like_sere(obj: object) -> bool:
    """Whether a loaded file holds a SERE network: ``student``/``teacher`` entries, or ViT keys.

    Args:
        obj: the loaded checkpoint.

    Returns:
        True for every layout :func:`convert_sere` reads (and for any ViT state dict).
    """
    if isinstance(obj, dict) and ("student" in obj or "teacher" in obj):
        return True
    return any(k.endswith(_VIT_MARKERS) for k in state_dict_keys(obj))


def _training_only(key: str) -> bool:
    """SERE relation heads, the student's mask token and the iBOT projection head."""
    return key.startswith(SERE_HEAD_NAMES) or key == MASK_TOKEN or key.startswith(HEAD_PREFIX)


def convert_sere(
    obj: Any, *, checkpoint: str | None = None, which: str | None = None, what: str = "checkpoint"
) -> Conversion:
    """Map a loaded official SERE checkpoint to a timm state dict (see the module docstring)."""
    if not isinstance(obj, dict):
        raise ConversionError(f"{what}: expected a dict checkpoint, got {type(obj).__name__}.")
    if which not in (None, "student", "teacher"):
        raise ConversionError(f"--which must be 'student' or 'teacher', not {which!r}.")
    notes: list[str] = []
    provenance: dict[str, Any] = {"method": "sere"}
    epochs = None
    if "teacher" in obj or "student" in obj:
        picked = which or ("teacher" if "teacher" in obj else "student")
        if picked not in obj:
            raise ConversionError(f"{what} has no {picked!r} network (keys: {sorted(obj)}).")
        state = obj[picked]
        epochs = obj.get("epoch")  # the next epoch to run == epochs completed
        provenance.update(format="pre-training checkpoint", network=picked, pretrain_epochs=epochs)
        notes.append(f"full pre-training checkpoint: exported the {picked}")
    else:
        state, container = obj, "flat state dict"
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                state, container = obj[key], f"'{key}' entry"
                break
        picked = None
        provenance.update(format=f"backbone file ({container})")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{what}: not a SERE state dict (non-tensor entries).")

    if state and all(k.startswith(DDP_PREFIX) for k in state):
        state = strip_prefix(state, DDP_PREFIX)
    if any(k.startswith(BACKBONE_PREFIX) for k in state):
        state = strip_prefix(
            state, BACKBONE_PREFIX
        )  # drops the iBOT head (head.mlp, last_layer...)
    if "head.weight" in state or any(k.startswith("fc_norm.") for k in state):
        raise ConversionError(
            f"{what} has a classifier ('head.weight' / 'fc_norm'): it is a fine-tuned ViT, not the "
            "self-supervised SERE backbone. Convert the pre-training checkpoint or the released "
            "'backbone' file instead."
        )
    student_hint = MASK_TOKEN in state
    dropped = sorted(
        {
            "head (iBOT projection head)" if k.startswith(HEAD_PREFIX) else k.split(".")[0]
            for k in state
            if _training_only(k)
        }
    )
    # A timm ViT has no BatchNorm: every BN buffer sat in a head dropped here.
    state = {k: v for k, v in state.items() if not _training_only(k)}
    if dropped:
        notes.append(f"dropped training-only parts: {', '.join(dropped)}")
    if picked is None:
        picked = "student" if student_hint else "teacher (probably)"
        notes.append(
            "backbone file holds the mask token 'masked_embed': these are student weights"
            if student_hint
            else "backbone file has no mask token: consistent with teacher weights "
            "(the student has one)"
        )
        provenance["network"] = "student" if student_hint else "teacher (no masked_embed)"
    elif student_hint and picked == "teacher":
        notes.append("warning: the 'teacher' entry holds a mask token, which only students have")

    arch = match_architecture(state, "sere", 0, what, checkpoint)
    name, candidates = resolve_checkpoint_name(checkpoint, arch, 0, epochs)
    return Conversion(
        state_dict=state,
        arch=arch,
        checkpoint=name,
        candidates=candidates,
        num_classes=0,
        notes=notes,
        provenance=provenance,
    )
