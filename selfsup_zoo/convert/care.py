"""Official CARE checkpoints (ChongjianGE/CARE) -> timm ``ResNet`` keys.

Three layouts are accepted (spec care.md §1.3, §2):

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

from ..errors import ConversionError
from . import Conversion, match_architecture, resolve_checkpoint_name, strip_prefix

# Parts of the official module that timm's ResNet does not have: T-stream and projection heads
# (pre-training) or the unused random Linear(2048, 128) of the evaluation encoder.
_TRAINING_ONLY = ("trans.", "fc1.", "fc2.", "fc.0.")
# BatchNorm1d default of the official linear classifier (nn.BatchNorm1d(1000)).
_BN_EPS = 1e-5


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


def _unwrap(obj: Any) -> Any:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    return obj


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
            linear_eval_epoch=obj.get("start_epoch"),
            best_top1=obj.get("best_top1"),
        )
    else:
        model = obj.get("model") if isinstance(obj.get("model"), dict) else None
        full_prefix = None
        if model is not None:
            for prefix in (f"module.{which}_encoder.", f"{which}_encoder."):
                if any(k.startswith(prefix) for k in model):
                    full_prefix = prefix
                    break
            if full_prefix is None and any("_encoder." in k for k in model):
                raise ConversionError(f"{what} has no {which} encoder in 'model'.")
        if full_prefix is not None:
            state, dropped = _encoder_only(strip_prefix(model, full_prefix))
            epochs = obj.get("start_epoch")
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
