"""How the catalog's protocols, metrics and methods are named in model cards and Hub metadata."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from selfsup_zoo import catalog
from selfsup_zoo.catalog import CatalogEntry, Result

#: GitHub repository that ``torch.hub.load`` fetches ``hubconf.py`` from.
GITHUB_REPO = f"{catalog.HF_ORG}/selfsup-zoo"


@dataclass(frozen=True)
class Protocol:
    short: str  # short name for the README table
    task_type: str  # Hugging Face task id for model-index
    task_name: str
    dataset_name: str
    dataset_type: str


# Keyed by the catalog's protocol strings, so a new protocol in the catalog fails loudly here
# (and in tests) instead of producing a card with a made-up description.
PROTOCOLS: dict[str, Protocol] = {
    catalog.CARE_LINEAR_PROTOCOL: Protocol(
        "IN-1k linear",
        "image-classification",
        "ImageNet-1k linear evaluation",
        "ImageNet-1k",
        "imagenet-1k",
    ),
    catalog.SERE_FINETUNE_PROTOCOL: Protocol(
        "IN-1k fine-tune",
        "image-classification",
        "ImageNet-1k fine-tuning (100 epochs)",
        "ImageNet-1k",
        "imagenet-1k",
    ),
    catalog.IMAGENET_S_PROTOCOL: Protocol(
        "ImageNet-S semi-sup. seg.",
        "image-segmentation",
        "ImageNet-S semi-supervised semantic segmentation",
        "ImageNet-S (919 classes)",
        "imagenet-s",
    ),
}

# metric id -> (label in prose, Hugging Face metric type, dataset split)
METRICS: dict[str, tuple[str, str, str]] = {
    "top1": ("top-1", "accuracy", "validation"),
    "top5": ("top-5", "top_5_accuracy", "validation"),
    "miou_val": ("mIoU val", "mean_iou", "validation"),
    "miou_test": ("mIoU test", "mean_iou", "test"),
}

METHOD_TITLES = {"care": "CARE", "sere": "SERE"}


def protocol_of(result: Result) -> Protocol:
    try:
        return PROTOCOLS[result.protocol]
    except KeyError:
        raise KeyError(
            f"No card description for protocol {result.protocol!r}: add it to "
            "selfsup_zoo.cards.vocabulary.PROTOCOLS"
        ) from None


def metric_of(result: Result) -> tuple[str, str, str]:
    try:
        return METRICS[result.metric]
    except KeyError:
        raise KeyError(
            f"No card description for metric {result.metric!r}: add it to "
            "selfsup_zoo.cards.vocabulary.METRICS"
        ) from None


def source_url(result: Result, entry: CatalogEntry) -> str:
    # Sources name the repository that publishes the number ("owner/name ..."); link to it.
    match = re.search(r"\b([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)\b", result.source)
    return f"https://github.com/{match.group(1)}" if match else entry.origin_url


def format_value(result: Result) -> str:
    """The value with as many decimals as its protocol's table uses upstream (91.50, not 91.5)."""
    return f"{result.value:.{_decimals(result.protocol)}f}"


@functools.cache
def _decimals(protocol: str) -> int:
    # Floats lose trailing zeros; the published precision is the most any number of the same
    # protocol in the catalog shows.
    return max(
        (
            len(repr(r.value).partition(".")[2].rstrip("0"))
            for entry in catalog.CATALOG.values()
            for r in entry.results
            if r.protocol == protocol
        ),
        default=2,
    )


def result_summary(entry: CatalogEntry) -> str:
    """The reported results in one line, e.g. ``top-1 72.02, top-5 90.02 (IN-1k linear)``."""
    groups: dict[str, list[Result]] = {}
    for r in entry.results:
        groups.setdefault(r.protocol, []).append(r)
    cells = []
    for protocol_text, rows in groups.items():
        values = ", ".join(f"{metric_of(r)[0]} {format_value(r)}" for r in rows)
        cells.append(f"{values} ({PROTOCOLS[protocol_text].short})")
    return "; ".join(cells)
