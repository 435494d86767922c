"""Export a trained classifier (a linear probe's head, a fine-tuned model) as a hub folder that
plain timm loads (``local-dir:``).

The layout is the catalog's ``care_resnet50.in1k_ep100_lincls``: timm's architecture with
``num_classes = C``. A probe's ``Linear`` + ``BatchNorm1d`` is folded into timm's classifier
(``fc`` of a ResNet) in float64 by the converter's own
:func:`~selfsup_zoo.convert.care.fold_linear_bn`; a fine-tuned model is written as it is, with the
model arguments of its source (a hub folder's ``img_size``, the fine-tuning ``global_pool``) so
that timm rebuilds the same network.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from selfsup_zoo.evaluation.extract import EvalTransform
from selfsup_zoo.evaluation.finetune_method import FineTune
from selfsup_zoo.evaluation.linear_probe import LinearProbe
from selfsup_zoo.evaluation.model_loading import source_architecture
from selfsup_zoo.hub import write_hub_folder

__all__ = ["export_finetuned", "export_probe", "write_classifier_folder"]


def write_classifier_folder(
    model: nn.Module,
    num_classes: int,
    transform: EvalTransform,
    out_dir: Path,
    *,
    architecture: str,
    model_args: Mapping[str, Any],
    provenance: Mapping[str, Any],
) -> Path:
    """Write ``model`` (a timm classifier of ``num_classes``) as a hub folder.

    Args:
        model: the classifier; its state dict is written from the CPU.
        num_classes: its number of classes.
        transform: the evaluation transform, recorded as the folder's pretrained cfg.
        out_dir: the folder to write.
        architecture: timm's (or the zoo's) architecture of ``model``.
        model_args: further ``timm.create_model`` kwargs that rebuild ``model``.
        provenance: how the weights were made, recorded in the config and card.

    Returns:
        The folder.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    folder = write_hub_folder(
        out_dir,
        state,
        architecture=architecture,
        model_args=dict(model_args),
        pretrained_cfg={
            "num_classes": num_classes,
            "input_size": (3, transform.size, transform.size),
            "crop_pct": transform.crop_pct,
            "interpolation": transform.interpolation,
            "mean": tuple(transform.mean),
            "std": tuple(transform.std),
        },
        provenance=dict(provenance),
    )
    return Path(folder.path)


def export_probe(probe: LinearProbe, key: str, transform: EvalTransform, out_dir: Path) -> Path:
    """Write head ``key`` of ``probe`` folded into the encoder's classifier.

    Args:
        probe: the trained probe.
        key: the head to export (a ``pool`` head).
        transform: the evaluation transform, recorded as the folder's pretrained cfg.
        out_dir: the folder to write.

    Returns:
        The folder.
    """
    model = probe.classifier(key)
    arch = str(getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__)
    _, args = source_architecture(probe.cfg.model)  # e.g. a hub folder's img_size
    return write_classifier_folder(
        model,
        probe.cfg.num_classes,
        transform,
        out_dir,
        architecture=arch,
        model_args=args,
        provenance={"linear_probe": {"model": probe.cfg.model, "head": key}},
    )


def export_finetuned(method: FineTune, transform: EvalTransform, out_dir: Path) -> Path:
    """Write the fine-tuned classifier of ``method``.

    Args:
        method: the trained fine-tuning method.
        transform: the evaluation transform, recorded as the folder's pretrained cfg.
        out_dir: the folder to write.

    Returns:
        The folder.
    """
    cfg = method.cfg
    arch, args = source_architecture(cfg.model)
    if cfg.global_pool:
        args["global_pool"] = cfg.global_pool
    return write_classifier_folder(
        method.model,
        cfg.num_classes,
        transform,
        out_dir,
        architecture=arch,
        model_args=args,
        provenance={"finetune": {"model": cfg.model, "random_init": cfg.random_init}},
    )
