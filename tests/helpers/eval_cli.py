"""The evaluation CLI for tests: its argument list, real subprocesses (SIGKILL-then-resume)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def eval_env() -> dict[str, str]:
    """This checkout on the path, no hub downloads."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def cli_args(
    protocol: str, model: str, train: Path, val: Path, out: Path, *extra: str
) -> list[str]:
    """``<protocol> MODEL --train DIR --val DIR --out DIR <extra>``."""
    return [protocol, model, "--train", str(train), "--val", str(val), "--out", str(out), *extra]


def eval_command(*argv: str) -> list[str]:
    """``python -m selfsup_zoo.evaluation <argv>``."""
    return [sys.executable, "-m", "selfsup_zoo.evaluation", *argv]


def run_eval(argv: list[str], cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    """Run the CLI to the end; fails with its stderr unless it exits 0."""
    proc = subprocess.run(
        eval_command(*argv), cwd=cwd, env=eval_env(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def kill_when_written(argv: list[str], target: Path, cwd: Path, timeout: float = 300) -> None:
    """Start the CLI and SIGKILL it as soon as ``target`` (a checkpoint) exists."""
    proc = subprocess.Popen(
        eval_command(*argv),
        cwd=cwd,
        env=eval_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + timeout
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
