"""Two-process gloo jobs forked from the test process, as a user's own launcher would start them.

Each rank gets ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE`` (env:// init, no launcher)
and runs the reproduce command line with its output in ``logs/rank<r>.txt``; forking skips the
imports a fresh interpreter pays on a busy machine.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path

import torch

from selfsup_zoo.training import reproduce


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, port: int, argv: list[str], out: str) -> None:
    """One process of a two-process job: the reproduce command line, output to ``out``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
    )
    torch.set_num_threads(1)
    with open(out, "w", buffering=1) as f:
        sys.stdout = sys.stderr = f
        try:
            code = reproduce.main(argv)
        except BaseException as err:  # noqa: BLE001 - report anything, then exit non-zero
            print(f"uncaught {type(err).__name__}: {err}", flush=True)
            code = 99
        f.flush()
    os._exit(code)


def start_job(argv: list[str], logs: Path) -> list[multiprocessing.process.BaseProcess]:
    """Start ranks 0 and 1 of a gloo job running ``reproduce.main(argv)`` (forked)."""
    logs.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("fork")
    port = free_port()
    procs = [
        ctx.Process(target=_rank_main, args=(r, port, argv, str(logs / f"rank{r}.txt")))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    return procs


def wait_job(procs: list[multiprocessing.process.BaseProcess], timeout: float) -> list[int | None]:
    """Exit codes (None: still running at the timeout, then killed)."""
    deadline = time.time() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.time()))
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return codes


def run_job(argv: list[str], logs: Path, timeout: float = 120) -> None:
    """Run a job to the end; both ranks must exit 0 (their output is the failure message)."""
    codes = wait_job(start_job(argv, logs), timeout)
    assert codes == [0, 0], [(p.name, p.read_text()[-2000:]) for p in sorted(logs.iterdir())]
