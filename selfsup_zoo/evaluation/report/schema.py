"""The typed content of a reproduction report (``report.json``), independent of how it is shown."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "PASS",
    "FAIL",
    "NO_REFERENCE",
    "MISSING",
    "Check",
    "Measurement",
    "Provenance",
    "Report",
]

#: Statuses of a :class:`Check` (and, ``MISSING`` aside, of the whole report).
PASS = "pass"
FAIL = "fail"
NO_REFERENCE = "no reference"
MISSING = "missing"  # a protocol the plan asked for has no results.json


@dataclass(frozen=True)
class Measurement:
    """The headline numbers of one final evaluation (``<run>/eval/<label>/results.json``).

    Attributes:
        label: the folder name under ``eval/`` (``knn``, ``linear-random-init``, ...).
        protocol: ``knn``, ``linear`` or ``finetune``.
        random_init: whether it measured the random-init twin (the baseline).
        row: the metrics row the numbers come from (``k=20``, ``best (paper)``, ``best``).
        top1, top5: percent; None when the protocol did not report it.
        data: the fingerprints of the folders it ran on (``train``/``val`` -> root, fingerprint,
            images, classes), as results.json records them.
        versions: the software versions results.json records.
    """

    label: str
    protocol: str
    random_init: bool
    row: str
    top1: float | None
    top5: float | None
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One measured number against its reference.

    Attributes:
        protocol: ``knn``, ``linear`` or ``finetune``.
        metric: ``top1`` or ``top5``.
        measured: percent (None when the evaluation is missing).
        reference: the number compared with (the paper's, or the random-init twin's), else None.
        reference_kind: ``paper``, ``random-init`` or ``none``.
        source: where the reference comes from (the catalog's source, or the twin's label).
        difference: ``measured - reference`` in points, when both exist.
        tolerance: for ``paper``: the largest ``|difference|`` that passes; for ``random-init``:
            the smallest margin over the twin that passes.
        status: :data:`PASS`, :data:`FAIL`, :data:`NO_REFERENCE` or :data:`MISSING`.
    """

    protocol: str
    metric: str
    measured: float | None
    reference: float | None
    reference_kind: str
    source: str
    difference: float | None
    tolerance: float | None
    status: str


@dataclass(frozen=True)
class Provenance:
    """How the weights were made, as the run folder records it ("" / None where it does not)."""

    recipe: str
    recipe_sha256: str
    checkpoint: str  # the catalog checkpoint the recipe regenerates, "" for smoke recipes
    method: str
    git_commit: str
    world_size: int
    devices: str
    steps: int
    total_steps: int
    wall_time_s: float
    device_hours: float
    data_root: str
    data_fingerprint: str
    data_images: int | None
    weights_sha256: str
    versions: dict[str, str]


@dataclass(frozen=True)
class Report:
    """What ``report.json`` holds (see ``docs/evaluation.md``, "Reproduction report").

    Attributes:
        run_dir: the run folder.
        verdict: :data:`PASS` when every check with a reference passes, :data:`FAIL` when one
            fails or is missing, :data:`NO_REFERENCE` when nothing could be compared.
        checks: measured vs reference, one per protocol and metric.
        measurements: every final evaluation found, baselines included.
        periodic_knn: the k-NN during pre-training (``evaluations.jsonl``), in epoch order.
        plan: what the final evaluations were asked to be (``eval/plan.json``, else inferred).
        provenance: how the weights were made.
        plots: the PNG files written, relative to the run folder.
        created: UTC time the report was built (the one field that differs between rebuilds).
    """

    run_dir: str
    verdict: str
    checks: list[Check]
    measurements: list[Measurement]
    periodic_knn: list[dict[str, Any]]
    plan: dict[str, Any]
    provenance: Provenance
    plots: list[str]
    created: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``report.json``."""
        return asdict(self)
