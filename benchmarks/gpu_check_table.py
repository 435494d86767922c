"""Pass/fail rows of the GPU check, their tolerances, and the table they are printed as.

Every row compares one number of a GPU (or CPU) run with the CPU fp32 value that the check computed
itself in the same session, from the same weights and the same batch. Tolerances are relative,
``|value - reference| / |reference|``, per precision:

* ``fp32``: 1e-4. With TF32 off, GPU and CPU kernels differ only in summation order; over a
  ResNet-50 or ViT-S forward that moves a scalar loss by ~1e-6..1e-5 relative, so 1e-4 leaves a
  margin and still catches a wrong kernel, layout or reduction.
* ``fp16``: 1e-2. Autocast runs convolutions and matmuls with a 10-bit mantissa (~5e-4 per op)
  and accumulates in fp32; the loss averages thousands of such products: a few 1e-3 at most
  are expected.
* ``bf16``: 3e-2. An 8-bit mantissa (~4e-3 per op), otherwise as fp16: up to ~1e-2 is expected.

Rows that compare nothing (a step that must only run and stay finite, a resume that must be
bit-identical) have no tolerance; a skipped row says why and does not fail the check.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TOLERANCE", "Row", "compare", "format_table", "all_passed", "isolated"]

logger = logging.getLogger(__name__)

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 3e-2}


@dataclass
class Row:
    """One line of the table."""

    item: str
    status: str  # "pass" | "FAIL" | "skip"
    value: float | None = None
    reference: float | None = None
    tolerance: float | None = None
    note: str = ""


def compare(item: str, precision: str, value: float, reference: float, note: str = "") -> Row:
    """A row comparing ``value`` with the CPU fp32 ``reference`` at ``precision``'s tolerance.

    Args:
        item: the row's name.
        precision: ``fp32``, ``bf16`` or ``fp16`` (picks the tolerance).
        value: the measured loss.
        reference: the CPU fp32 loss of the same weights and batch.
        note: extra text (losses of the later steps, times, memory).

    Returns:
        A passing row when the relative difference is within the tolerance and ``value`` finite.
    """
    tol = TOLERANCE[precision]
    rel = abs(value - reference) / max(abs(reference), 1e-12)
    ok = math.isfinite(value) and rel <= tol
    text = f"rel diff {rel:.1e}" + (f"; {note}" if note else "")
    return Row(item, "pass" if ok else "FAIL", value, reference, tol, text)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def format_table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table (item, status, value, reference, tolerance, note)."""
    head = ("item", "result", "value", "cpu fp32", "tol", "note")
    cells = [
        (r.item, r.status, _num(r.value), _num(r.reference), _num(r.tolerance), r.note)
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(5)]
    lines = []
    for c in [head, *cells]:
        lines.append("  ".join(c[i].ljust(widths[i]) for i in range(5)) + "  " + c[5])
    lines.insert(1, "-" * (sum(widths) + 12))
    return "\n".join(lines)


def all_passed(rows: list[Row]) -> bool:
    """True when no row failed (skipped rows do not fail the check) and there is at least one."""
    return bool(rows) and all(r.status != "FAIL" for r in rows)


def isolated(
    item: str, rows: list[Row], run: Callable[[], Row | list[Row]], echo: bool = True
) -> None:
    """Run one item and append its rows; an exception becomes a FAIL row with its error instead.

    Args:
        item: the name of the row an exception becomes.
        rows: where the rows go.
        run: the item (returns one row or several).
        echo: print each row as it comes (off where ``run`` printed its rows itself).
    """
    try:
        out = run()
    except Exception as err:  # noqa: BLE001 - every item reports its own failure and the rest run
        logger.exception("%s failed", item)
        first = (str(err).splitlines() or [""])[0][:160]
        out = Row(item, "FAIL", note=f"{type(err).__name__}: {first}")
        echo = True
    for row in out if isinstance(out, list) else [out]:
        if echo:
            print(f"  {row.item}: {row.status} {row.note}", flush=True)
        rows.append(row)
