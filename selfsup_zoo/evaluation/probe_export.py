"""Export a trained linear probe as a hub folder that plain timm loads (``local-dir:``).

The layout is the catalog's ``care_resnet50.in1k_ep100_lincls``: timm's architecture with
``num_classes = C`` and the probe's ``Linear`` + ``BatchNorm1d`` folded into timm's classifier
(``fc`` of a ResNet) in float64 by the converter's own
:func:`~selfsup_zoo.convert.care.fold_linear_bn`.
"""

from __future__ import annotations

from pathlib import Path

from selfsup_zoo.evaluation.extract import EvalTransform
from selfsup_zoo.evaluation.linear_probe import LinearProbe
from selfsup_zoo.hub import write_hub_folder

__all__ = ["export_probe"]


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
    folder = write_hub_folder(
        out_dir,
        model.state_dict(),
        architecture=arch,
        pretrained_cfg={
            "num_classes": probe.cfg.num_classes,
            "input_size": (3, transform.size, transform.size),
            "crop_pct": transform.crop_pct,
            "interpolation": transform.interpolation,
            "mean": tuple(transform.mean),
            "std": tuple(transform.std),
        },
        provenance={"linear_probe": {"model": probe.cfg.model, "head": key}},
    )
    return Path(folder.path)
