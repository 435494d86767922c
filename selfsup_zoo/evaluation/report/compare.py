"""Measured vs reference: the paper's number for catalog checkpoints, else the random-init twin.

The tolerances are stated once, here, and explained in ``docs/evaluation.md`` ("Reproduction
report"): change both together.
"""

from __future__ import annotations

from collections.abc import Sequence

from selfsup_zoo import catalog
from selfsup_zoo.catalog import CatalogEntry

from .schema import FAIL, MISSING, NO_REFERENCE, PASS, Check, Measurement

__all__ = [
    "PAPER_PROTOCOLS",
    "PAPER_TOLERANCE",
    "RANDOM_INIT_MARGIN",
    "compare",
    "verdict",
]

#: Final-evaluation protocol -> the catalog protocol whose reported numbers it reproduces.
PAPER_PROTOCOLS: dict[str, str] = {
    "linear": catalog.CARE_LINEAR_PROTOCOL,
    "finetune": catalog.SERE_FINETUNE_PROTOCOL,
}

#: (protocol, metric) -> largest |measured - paper| in points that passes. CARE's linear numbers
#: are single runs of an 80-epoch probe on weights from one pre-training seed: seed-to-seed spread
#: of such pipelines is a few tenths of a point, so one point allows for that plus hardware and
#: batch-layout differences. SERE's fine-tuning is a 100-epoch supervised run that averages much of
#: the pre-training noise away: half a point.
PAPER_TOLERANCE: dict[tuple[str, str], float] = {
    ("linear", "top1"): 1.0,
    ("linear", "top5"): 1.0,
    ("finetune", "top1"): 0.5,
    ("finetune", "top5"): 0.5,
}

#: protocol -> the smallest margin in points by which the SSL backbone must beat its random-init
#: twin (same architecture, random weights) when there is no paper number: the smoke recipes'
#: pass criterion.
RANDOM_INIT_MARGIN: dict[str, float] = {"knn": 5.0, "linear": 5.0, "finetune": 1.0}

_METRICS = ("top1", "top5")


def _value(m: Measurement, metric: str) -> float | None:
    return m.top1 if metric == "top1" else m.top5


def _paper_checks(
    protocol: str, measured: Measurement | None, entry: CatalogEntry
) -> list[Check] | None:
    wanted = PAPER_PROTOCOLS.get(protocol)
    rows = [r for r in entry.results if r.protocol == wanted and r.metric in _METRICS]
    if not rows:
        return None
    checks = []
    for r in rows:
        value = None if measured is None else _value(measured, r.metric)
        tol = PAPER_TOLERANCE[(protocol, r.metric)]
        diff = None if value is None else value - r.value
        if diff is None:
            status = MISSING
        else:
            status = PASS if abs(diff) <= tol else FAIL
        checks.append(
            Check(protocol, r.metric, value, r.value, "paper", r.source, diff, tol, status)
        )
    return checks


def _twin_check(protocol: str, measured: Measurement | None, twin: Measurement | None) -> Check:
    value = None if measured is None else measured.top1
    if twin is None or twin.top1 is None:
        status = MISSING if value is None else NO_REFERENCE
        return Check(protocol, "top1", value, None, "none", "", None, None, status)
    margin = RANDOM_INIT_MARGIN[protocol]
    diff = None if value is None else value - twin.top1
    status = MISSING if diff is None else (PASS if diff >= margin else FAIL)
    return Check(
        protocol, "top1", value, twin.top1, "random-init", twin.label, diff, margin, status
    )


def compare(
    measurements: Sequence[Measurement], protocols: Sequence[str], checkpoint: str
) -> list[Check]:
    """The checks of a run.

    Args:
        measurements: the final evaluations found (SSL weights and random-init twins).
        protocols: the protocols to check (the plan's, or those measured), in order.
        checkpoint: the catalog checkpoint the recipe regenerates, "" for others.

    Returns:
        Per protocol: one check per reported metric against the paper when the catalog has a
        number for it; else one top-1 check against the random-init twin; else a top-1 row with
        status ``no reference`` (or ``missing`` when it was not measured either).
    """
    entry = catalog.get_entry(checkpoint) if checkpoint else None
    ssl = {m.protocol: m for m in measurements if not m.random_init}
    twins = {m.protocol: m for m in measurements if m.random_init}
    checks: list[Check] = []
    for protocol in protocols:
        paper = _paper_checks(protocol, ssl.get(protocol), entry) if entry else None
        checks += (
            paper if paper else [_twin_check(protocol, ssl.get(protocol), twins.get(protocol))]
        )
    return checks


def verdict(checks: Sequence[Check]) -> str:
    """``fail`` when a check fails or is missing; ``pass`` when at least one passes and none
    fails; ``no reference`` when nothing could be compared."""
    statuses = {c.status for c in checks}
    if FAIL in statuses or MISSING in statuses:
        return FAIL
    return PASS if PASS in statuses else NO_REFERENCE
