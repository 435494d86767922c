"""The GPU check's CPU mode end to end (``--device cpu --quick``: the same code paths at tiny
sizes), and its pass/fail rules. CI never needs a GPU for this.

CI runs the smoke-recipe and step items; the two-process resume item (six rank processes, minutes
on 2 cores) runs with ``-m slow`` (the engine's own 2-process resume tests, tests/training/
test_preemption.py and test_rank_failure.py, cover that path in CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check_table import TOLERANCE, Row, all_passed, compare, isolated

ROOT = Path(__file__).resolve().parents[2]


def _run_check(tmp_path: Path, *only: str) -> dict[str, dict]:
    out = tmp_path / "check.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--quick"]
    command += ["--json", str(out), "--workdir", str(tmp_path / "work")]
    if only:
        command += ["--only", *only]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASS:" in done.stdout and "item" in done.stdout and "cpu fp32" in done.stdout
    return {r["item"]: r for r in json.loads(out.read_text())["rows"]}


def test_cpu_quick_smoke_and_step_items_pass(tmp_path: Path) -> None:
    rows = _run_check(tmp_path, "smoke", "steps")
    for recipe in ("smoke_care", "smoke_sere"):
        for precision in ("fp32", "bf16"):
            row = rows[f"{recipe} {precision}"]
            assert row["status"] == "pass" and row["tolerance"] == TOLERANCE[precision]
        assert rows[f"{recipe} fp16+GradScaler"]["status"] == "skip"
        assert "CUDA" in rows[f"{recipe} fused optimizer"]["note"]
    # the CPU fp32 run is the reference itself: equal to it
    assert rows["smoke_care fp32"]["value"] == rows["smoke_care fp32"]["reference"]
    for kind in ("care", "sere"):
        assert rows[f"{kind} step fp32 b2"]["status"] == "pass"
        assert rows[f"{kind} step bf16 b2"]["status"] == "pass"
    assert "2-process resume (fp32)" not in rows


@pytest.mark.slow
def test_cpu_quick_two_process_resume_is_bit_identical(tmp_path: Path) -> None:
    resume = _run_check(tmp_path, "resume")["2-process resume (fp32)"]
    assert resume["status"] == "pass" and "bit-identical" in resume["note"]


def test_a_loss_out_of_tolerance_or_a_crashing_item_fails_the_check() -> None:
    assert compare("x", "fp32", 1.0 + 5e-5, 1.0).status == "pass"
    assert compare("x", "fp32", 1.0 + 5e-4, 1.0).status == "FAIL"
    assert compare("x", "bf16", 1.0 + 2e-2, 1.0).status == "pass"
    assert compare("x", "fp16", float("nan"), 1.0).status == "FAIL"
    rows: list[Row] = []

    def broken() -> Row:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    isolated("broken item", rows, broken)
    isolated("fine item", rows, lambda: Row("fine item", "pass"))
    assert [r.status for r in rows] == ["FAIL", "pass"]
    assert "illegal memory access" in rows[0].note
    assert not all_passed(rows) and all_passed(rows[1:]) and not all_passed([])
    assert all_passed([Row("skipped", "skip", note="no CUDA"), rows[1]])
