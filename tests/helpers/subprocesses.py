"""Fresh interpreters for tests that must see what a user sees (plain timm, no checkout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(
    code: str, *args: str, with_zoo: bool, cwd: Path, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; only ``with_zoo`` puts this checkout on its path.

    Without it the child sees installed packages only (no PYTHONPATH, cwd outside the checkout),
    which is how a user with plain timm loads a hub folder. ``env_extra`` adds variables.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra or {})
    if with_zoo:
        env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def last_json_line(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])
