"""Comparing two finished runs of a fault test: the uninterrupted one and the resumed one."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.tiny_runs import tensors_equal
from selfsup_zoo.training.checkpoint import checkpoint_path, load_checkpoint


def log_rows(run: Path) -> int:
    """Rows written to the run's ``log.jsonl`` so far (0 before it exists)."""
    try:
        return len((run / "log.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def assert_same_run(ref: Path, other: Path, steps: int) -> None:
    """Final checkpoint at ``steps`` (weights, optimizer, scaler, RNG, step) and every log row
    except the throughput are equal, and the log has one row per step."""
    a = load_checkpoint(checkpoint_path(ref, steps))
    b = load_checkpoint(checkpoint_path(other, steps))
    for key in ("method", "optimizer", "scaler", "rng", "step"):
        assert tensors_equal(a[key], b[key], key) == []

    def rows(run: Path) -> list[dict[str, float]]:
        lines = (run / "log.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(r).items() if k != "images_per_s"} for r in lines]

    assert rows(ref) == rows(other)
    assert [r["step"] for r in rows(other)] == list(range(1, steps + 1))
