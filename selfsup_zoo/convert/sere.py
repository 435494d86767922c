"""Official SERE checkpoints (MCG-NKU/SERE, an iBOT fork) -> timm ``VisionTransformer`` keys.

Spec sere.md §1.8: pick ``teacher`` if present (DINO/iBOT/SERE report teacher results and their
"backbone" downloads are teacher weights), else ``student``, ``state_dict``, ``model`` or the flat
dict; strip ``module.``; keep ``backbone.*`` when present (drops the iBOT head); drop the mask
token and the four SERE heads; require exactly timm's ViT keys. A ``masked_embed`` key means the
weights are the student's (the teacher has no mask token).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConversionError
from . import Conversion, match_architecture, resolve_checkpoint_name, strip_prefix

# Training-only parts inside the official backbone (SERE relation heads and their BN buffers; the
# prefixes also cover the `_local` heads).
_SERE_HEADS = ("channel_sere", "pixel_sere")


def _training_only(key: str) -> bool:
    """SERE relation heads, the student's mask token and the iBOT projection head."""
    return key.startswith(_SERE_HEADS) or key == "masked_embed" or key.startswith("head.")


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

    if state and all(k.startswith("module.") for k in state):
        state = strip_prefix(state, "module.")
    if any(k.startswith("backbone.") for k in state):
        state = strip_prefix(state, "backbone.")  # drops the iBOT head (head.mlp, last_layer...)
    if "head.weight" in state or any(k.startswith("fc_norm.") for k in state):
        raise ConversionError(
            f"{what} has a classifier ('head.weight' / 'fc_norm'): it is a fine-tuned ViT, not the "
            "self-supervised SERE backbone. Convert the pre-training checkpoint or the released "
            "'backbone' file instead."
        )
    student_hint = "masked_embed" in state
    dropped = sorted(
        {
            "head (iBOT projection head)" if k.startswith("head.") else k.split(".")[0]
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
            else "backbone file has no mask token: consistent with teacher weights (the student has one)"
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
