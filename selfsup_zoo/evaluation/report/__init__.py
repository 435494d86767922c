"""The reproduction report of a run folder: ``report.json``, ``report.md``, plots, model card.

``python -m selfsup_zoo.evaluation report RUN`` (or :func:`write_report`) reads what the run wrote
(``recipe.json``, ``log.jsonl``, ``summary.json``, ``export/``, ``evaluations.jsonl``,
``eval/<label>/results.json``, ``eval/plan.json``) and writes, in the run folder, ``report.json``,
``report.md`` and ``plots/*.png``, and rewrites ``export/README.md`` with the measured results in
its ``model-index``. Rebuilding gives the same ``report.json`` but for its ``created`` time.

Modules: :mod:`.schema` (the typed report), :mod:`.collect` (reading the run folder),
:mod:`.compare` (tolerances and pass/fail), :mod:`.plots`, :mod:`.markdown`, :mod:`.card`,
:mod:`.cli` (the command).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from selfsup_zoo._io import atomic_write_text

from .card import write_card
from .collect import ReportError, collect, read_json, read_log, resolve_run_dir
from .compare import PAPER_TOLERANCE, RANDOM_INIT_MARGIN
from .markdown import render_markdown
from .plots import write_plots
from .schema import Check, Measurement, Provenance, Report

__all__ = [
    "REPORT_JSON",
    "REPORT_MD",
    "PAPER_TOLERANCE",
    "RANDOM_INIT_MARGIN",
    "Check",
    "Measurement",
    "Provenance",
    "Report",
    "ReportError",
    "build_report",
    "write_report",
]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def build_report(run_dir: str | Path) -> Report:
    """Read a finished run folder into a :class:`Report` (writes nothing; ``plots`` empty).

    Args:
        run_dir: a run folder, or its ``export/`` hub folder.

    Raises:
        ReportError: not a run folder, no export, an unreadable file.
    """
    return collect(run_dir)


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.json``, ``report.md``, ``plots/*.png`` and the measured model card.

    Args:
        run_dir: a run folder, or its ``export/`` hub folder.

    Returns:
        The path of ``report.json``.

    Raises:
        ReportError: not a run folder, no export, an unreadable ``log.jsonl`` or other file.
    """
    folder = resolve_run_dir(run_dir)
    rows = read_log(folder)  # before anything is written: a damaged log fails cleanly
    first = collect(folder)
    twin = next((m.top1 for m in first.measurements if m.protocol == "knn" and m.random_init), None)
    plots = write_plots(folder, rows, first.periodic_knn, twin, first.provenance.recipe)
    report = dataclasses.replace(first, plots=plots)
    text = json.dumps(report.to_dict(), indent=2) + "\n"
    atomic_write_text(folder / REPORT_JSON, text)
    atomic_write_text(folder / REPORT_MD, render_markdown(report))
    write_card(folder / "export", read_json(folder / "export" / "config.json"), report)
    return folder / REPORT_JSON
