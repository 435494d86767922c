"""One of two ranks killed with SIGKILL mid-step (or stopped with SIGSTOP): the job ends within a
waiting in a collective), with and without torchrun's agent, and ``--resume auto`` then continues
bit-identically (tiny SERE model on 48 real digits, 12 steps, gloo).

The launcher-free jobs are two processes forked from the test process with ``MASTER_ADDR`` /
``MASTER_PORT`` / ``RANK`` / ``WORLD_SIZE`` (env:// init), as a user's own launcher would start
them; forking skips the imports a fresh interpreter pays. The torchrun job is a real
``torch.distributed.run``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers.forked_jobs import run_job, start_job, wait_job
from helpers.run_compare import assert_same_run as same_run
from helpers.run_compare import log_rows
from helpers.tiny_runs import TINY_SERE

from selfsup_zoo.training.checkpoint import list_checkpoints, load_checkpoint

TINY = [
    *TINY_SERE,
    "engine.per_device_batch=4",
    "engine.tensorboard=false",
    "engine.ckpt_every_steps=2",
    "engine.keep_last=10",
]
STEPS = 12
TIMEOUT_S = 20  # the collective timeout the tests give the jobs (the default is 600 s)


def job_argv(out: Path, images: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "smoke_sere",
        "--output-dir",
        str(out),
        "--dist-timeout",
        str(TIMEOUT_S),
        *extra,
        "--set",
        *TINY,
        f'data.root="{images}"',
        f'data.cache_dir="{cache}"',
        "data.workers=0",
    ]


def wait_rows(run: Path, rows: int, alive: list[multiprocessing.process.BaseProcess]) -> None:
    deadline = time.time() + 120
    while log_rows(run) < rows and all(p.is_alive() for p in alive) and time.time() < deadline:
        time.sleep(0.005)
    assert log_rows(run) >= rows, "the job did not get going"


def assert_same_run(ref: Path, other: Path) -> None:
    same_run(ref, other, STEPS)


# --------------------------------------------------------------------------------------------------
# Jobs without a launcher: two processes forked from this one
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, images: Path, cache: Path) -> Path:
    """The uninterrupted 12-step run on two processes."""
    out = tmp_path_factory.mktemp("reference")
    run_job(job_argv(out, images, cache), out / "logs")
    return out / "smoke_sere"


@pytest.mark.parametrize("killed", [1, 0], ids=["rank1", "rank0-store-host"])
def test_without_launcher_the_survivor_exits_with_a_clear_message_then_resume(
    tmp_path, images, cache, reference, killed
):
    argv = job_argv(tmp_path, images, cache)
    run = tmp_path / "smoke_sere"
    procs = start_job(argv, tmp_path / "logs")
    wait_rows(run, 3, procs)
    victim, survivor = procs[killed], procs[1 - killed]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    codes = wait_job(procs, 60)
    took = time.time() - killed_at
    text = (tmp_path / "logs" / f"rank{1 - killed}.txt").read_text()
    assert codes[1 - killed] == 4, (codes, text[-3000:])  # exited by itself, with our status
    assert took < 60
    assert codes[killed] == -signal.SIGKILL
    message = [r for r in text.splitlines() if r.startswith("error: ")]
    assert message, text[-3000:]
    assert f"lost contact with rank {killed}" in message[-1]
    assert f"time out after {TIMEOUT_S:g} s" in message[-1] and "--resume auto" in message[-1]
    assert not survivor.is_alive()
    assert load_checkpoint(list_checkpoints(run)[-1])["step"] < STEPS

    run_job([*argv[:5], "--resume", "auto", *argv[5:]], tmp_path / "logs2")
    assert_same_run(reference, run)


# --------------------------------------------------------------------------------------------------
# torchrun: its agent tears the group down
# --------------------------------------------------------------------------------------------------
def _worker_pids(agent: int) -> dict[int, int]:
    """rank -> pid of the agent's worker processes (read from /proc)."""
    found: dict[int, int] = {}
    for task in Path(f"/proc/{agent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for item in env:
                if item.startswith(b"RANK="):
                    found[int(item[5:])] = int(pid)
    return found


def test_torchrun_ends_the_job_when_a_worker_is_killed_then_resume(
    tmp_path, images, cache, reference, cli
):
    argv = job_argv(tmp_path, images, cache)
    run = tmp_path / "smoke_sere"
    agent = subprocess.Popen(
        cli.command(*argv, nproc=2),
        cwd=cli.root,
        env=cli.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 150
    while log_rows(run) < 3 and agent.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    workers = _worker_pids(agent.pid)
    assert sorted(workers) == [0, 1], workers
    os.kill(workers[1], signal.SIGKILL)
    killed_at = time.time()
    _, stderr = agent.communicate(timeout=90)
    assert time.time() - killed_at < 60
    assert agent.returncode != 0
    assert "FAILED" in stderr or "failed" in stderr.lower()
    for pid in workers.values():  # no worker left behind
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
    assert load_checkpoint(list_checkpoints(run)[-1])["step"] < STEPS

    run_job([*argv[:5], "--resume", "auto", *argv[5:]], tmp_path / "logs2")
    assert_same_run(reference, run)


def test_without_launcher_a_hung_rank_times_out_the_survivor(tmp_path, images, cache):
    """A peer that stops answering (SIGSTOP: alive, connections open) is caught by the timeout."""
    argv = job_argv(tmp_path, images, cache)
    argv[4] = "4"  # --dist-timeout 4
    procs = start_job(argv, tmp_path / "logs")
    wait_rows(tmp_path / "smoke_sere", 3, procs)
    assert procs[1].pid is not None
    os.kill(procs[1].pid, signal.SIGSTOP)
    stopped_at = time.time()
    procs[0].join(60)
    took = time.time() - stopped_at
    code = procs[0].exitcode
    os.kill(procs[1].pid, signal.SIGKILL)
    procs[1].join()
    text = (tmp_path / "logs" / "rank0.txt").read_text()
    assert code == 4, text[-3000:]
    assert took < 30
    message = [r for r in text.splitlines() if r.startswith("error: ")][-1]
    assert "lost contact with rank 1" in message and "time out after 4 s" in message
