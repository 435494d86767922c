"""The benchmark runner end to end with tiny sizes (a smoke test of the machinery, not a timing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_runner_quick_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "benchmarks", "run", "--quick", "--threads", "1"]
    command += ["--only", "care_views", "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr
    assert "| care_views | ours | official |" in done.stdout
    assert "load average" in done.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["case"], r["setting"]) for r in rows] == [("care_views", "official")]
    assert all(r["error"] is None and r["seconds"] and r["peak_mb"] > 0 for r in rows)
