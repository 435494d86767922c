"""results.json (what was measured, how, on what, with which software) and the printed table."""

from __future__ import annotations

import datetime
import json
import math
import platform
from pathlib import Path
from typing import Any

import timm
import torch

import selfsup_zoo
from selfsup_zoo._io import atomic_write_text

__all__ = ["RESULTS_FILE", "format_table", "software_versions", "write_results"]

RESULTS_FILE = "results.json"


def software_versions() -> dict[str, str]:
    """Versions that can change a measurement."""
    return {
        "selfsup_zoo": selfsup_zoo.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "cuda": str(torch.version.cuda) if torch.cuda.is_available() else "",
    }


def _finite_or_none(value: Any) -> Any:
    # JSON has no NaN/inf: a metric that could not be computed is written as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def write_results(out_dir: Path, results: dict[str, Any]) -> Path:
    """Write ``out_dir/results.json`` atomically (with a UTC timestamp); returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamped = {**results, "created": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    path = out_dir / RESULTS_FILE
    atomic_write_text(path, json.dumps(_finite_or_none(stamped), indent=2, sort_keys=False) + "\n")
    return path


def format_table(title: str, metrics: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per metric group, one column per metric.

    Args:
        title: first line.
        metrics: row label -> column -> value (floats printed with 2 decimals).
    """
    columns = list(dict.fromkeys(c for row in metrics.values() for c in row))
    label_width = max([len(r) for r in metrics] + [4])
    lines = [title, " " * label_width + "".join(f"  {c:>10}" for c in columns)]
    for label, row in metrics.items():
        cells = []
        for c in columns:
            value = row.get(c)
            cells.append(f"  {'-':>10}" if value is None else f"  {value:>10.2f}")
        lines.append(f"{label:<{label_width}}" + "".join(cells))
    return "\n".join(lines)
