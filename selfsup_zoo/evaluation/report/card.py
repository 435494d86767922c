"""Rewrite the run's exported model card with the measured results and the report's provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfsup_zoo import catalog
from selfsup_zoo._io import atomic_write_text
from selfsup_zoo.cards import render_model_card
from selfsup_zoo.cards.measured import MeasuredResult

from .schema import Measurement, Report

__all__ = ["measured_results", "write_card"]


def _dataset_name(root: str) -> str:
    # The last two parts of the folder (``digits@32/val``, ``imagenet/val``): the name a person
    # recognises, without the machine's own path.
    parts = Path(root).parts
    return "/".join(parts[-2:]) if parts else "image folder"


def measured_results(measurements: list[Measurement]) -> list[MeasuredResult]:
    """The SSL weights' final evaluations (not the random-init twins') for the card."""
    out = []
    for m in measurements:
        if m.random_init:
            continue
        val = m.data.get("val", {})
        images = val.get("images")
        out.append(
            MeasuredResult(
                protocol=m.protocol,
                detail=m.row,
                dataset=_dataset_name(str(val.get("root", ""))),
                fingerprint=str(val.get("fingerprint", "")),
                images=int(images) if isinstance(images, int) else None,
                top1=m.top1,
                top5=m.top5,
            )
        )
    return out


def _card_provenance(config: dict[str, Any], report: Report) -> dict[str, Any]:
    p = report.provenance
    made = dict((config.get("selfsup_zoo") or {}).get("provenance") or {})
    made.update(
        {
            "device_hours": p.device_hours,
            "data_fingerprint": p.data_fingerprint or "unknown",
            "verdict": report.verdict,
        }
    )
    if p.data_images is not None:
        made["data_images"] = p.data_images
    return made


def write_card(export_dir: Path, config: dict[str, Any], report: Report) -> Path:
    """Rewrite ``export_dir/README.md`` as the hub-folder writer does, plus the measured results.

    Args:
        export_dir: the run's hub folder.
        config: its ``config.json``.
        report: the collected report.

    Returns:
        The card's path.
    """
    zoo = config.get("selfsup_zoo") or {}
    name = zoo.get("checkpoint")
    entry = catalog.get_entry(name) if name else None
    card = render_model_card(
        entry,
        sha256=zoo.get("sha256"),
        provenance=_card_provenance(config, report),
        architecture=str(config["architecture"]),
        model_args=config.get("model_args") or {},
        num_classes=int(config.get("num_classes", 0)),
        measured=measured_results(report.measurements),
    )
    path = export_dir / "README.md"
    atomic_write_text(path, card)
    return path
