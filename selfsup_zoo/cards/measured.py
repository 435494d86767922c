"""Results measured on the weights themselves (a reproduction report), for the model card.

The card writer (:func:`selfsup_zoo.cards.render_model_card`) puts them in the Hugging Face
``model-index`` beside the paper's numbers, and in a "Results measured on these weights" section.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .vocabulary import GITHUB_REPO

__all__ = ["MEASURED_SOURCE", "MeasuredResult", "measured_model_index", "measured_section"]

#: ``source.name`` of every measured model-index result (the paper's carry their own source).
MEASURED_SOURCE = "selfsup-zoo reproduction report (measured on these weights)"

_TASKS = {
    "knn": "weighted k-NN on frozen features",
    "linear": "linear probe on frozen features",
    "finetune": "full fine-tuning",
}


@dataclass(frozen=True)
class MeasuredResult:
    """One final evaluation of the weights a card describes.

    Attributes:
        protocol: ``knn``, ``linear`` or ``finetune``.
        detail: which number of the protocol (``k=20``, ``best (paper)``, ...).
        dataset: the evaluation folder, as a person names it (``digits@32/val``).
        fingerprint: sha256 of the evaluation folder's file list (the evaluation's own record).
        images: images evaluated on, None when unknown.
        top1, top5: percent; None when not measured.
    """

    protocol: str
    detail: str
    dataset: str
    fingerprint: str
    images: int | None
    top1: float | None
    top5: float | None


def _dataset_type(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "image-folder"


def measured_model_index(measured: Sequence[MeasuredResult]) -> list[dict[str, Any]]:
    """``model-index`` results (task, dataset, split, metrics, source), one per evaluation.

    Args:
        measured: the evaluations; those without any number are left out.

    Returns:
        Entries for the ``results`` list of a ``model-index`` model.
    """
    out = []
    for m in measured:
        metrics = [
            {"type": kind, "value": round(value, 4), "name": f"{name} ({m.detail})"}
            for kind, name, value in (
                ("accuracy", "top-1", m.top1),
                ("top_5_accuracy", "top-5", m.top5),
            )
            if value is not None
        ]
        if not metrics:
            continue
        dataset: dict[str, Any] = {
            "name": m.dataset,
            "type": _dataset_type(m.dataset),
            "split": "validation",
        }
        if m.fingerprint:
            dataset["args"] = {"fingerprint": m.fingerprint, "images": m.images}
        out.append(
            {
                "task": {
                    "type": "image-classification",
                    "name": f"{_TASKS.get(m.protocol, m.protocol)} (measured)",
                },
                "dataset": dataset,
                "metrics": metrics,
                "source": {"name": MEASURED_SOURCE, "url": f"https://github.com/{GITHUB_REPO}"},
            }
        )
    return out


def measured_section(measured: Sequence[MeasuredResult]) -> list[str]:
    """The card's "Results measured on these weights" section (Markdown lines)."""

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        "## Results measured on these weights",
        "",
        "Measured by `python -m selfsup_zoo.evaluation report` on this very file (see the run's "
        "`report.md`).",
        "",
        "| protocol | top-1 (%) | top-5 (%) | dataset (validation) | images | fingerprint |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in measured:
        fp = f"`{m.fingerprint[:16]}`" if m.fingerprint else "-"
        lines.append(
            f"| {_TASKS.get(m.protocol, m.protocol)} ({m.detail}) | {num(m.top1)} | {num(m.top5)} "
            f"| `{m.dataset}` | {m.images if m.images is not None else '-'} | {fp} |"
        )
    lines.append("")
    return lines
