"""``python -m selfsup_zoo.evaluation report RUN_OR_FOLDER``: rebuild a run's report."""

from __future__ import annotations

import argparse
import logging
import sys

from . import REPORT_MD, write_report
from .collect import ReportError

__all__ = ["SUMMARY", "main"]

SUMMARY = "rebuild report.json, report.md, plots/ and the measured model card of a finished run"


def main(
    argv: list[str] | None = None, prog: str = "python -m selfsup_zoo.evaluation report"
) -> int:
    """Parse ``argv`` and write the report; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(prog=prog, description=SUMMARY)
    parser.add_argument(
        "run", help="the run folder (<output-dir>/<recipe name>) or its export/ hub folder"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = write_report(args.run)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {path} ({path.with_name(REPORT_MD).name} beside it)")
    return 0
