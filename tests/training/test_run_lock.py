"""One run per run folder: a second run is refused at once with the first one's host and pid and
writes nothing; a run killed with SIGKILL leaves no stale lock (real processes, tiny SERE).

Runtime on 2 shared CPU cores: about 30-50 s.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers.tiny_runs import tiny

from selfsup_zoo.training.checkpoint import list_checkpoints, load_checkpoint
from selfsup_zoo.training.run_lock import LOCK_NAME, RunFolderLockedError, RunLock


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime (ns)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_lock_is_exclusive_names_its_holder_and_checking_creates_nothing(tmp_path):
    run = tmp_path / "run"
    assert RunLock(run).acquire(create=False) is False
    assert not run.exists(), "checking a folder without a lock file creates nothing"
    with RunLock(run) as first:
        assert first.acquire(create=True)
        holder = json.loads((run / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        # flock conflicts between two open files even inside one process
        with pytest.raises(RunFolderLockedError, match=f"pid {os.getpid()}"):
            RunLock(run).acquire(create=False)
    assert RunLock(run).acquire(create=False), "released on exit"


def test_second_run_refused_with_first_pid_and_sigkilled_run_leaves_no_lock(
    tmp_path, images, cache, cli
):
    out = tmp_path / "runs"
    common = ["--output-dir", str(out), "--set", *tiny(images, f'data.cache_dir="{cache}"')]
    run_dir = out / "smoke_sere"
    # Run 1: 2 epochs x 6 steps, checkpoint every step; stopped (SIGSTOP) once it has one.
    first = subprocess.Popen(
        cli.command("smoke_sere", *common, "engine.ckpt_every_steps=1", "engine.keep_last=20"),
        cwd=cli.root,
        env=cli.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not list_checkpoints(run_dir) and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # frozen mid-run: the folder cannot change under us
        assert first.poll() is None, "run 1 ended before it could be caught running"
        before = snapshot(run_dir)

        # Run 2 on the same folder (a fresh run, as a user repeating the command would start it).
        t0 = time.time()
        second = cli.run(cli.command("smoke_sere", *common), timeout=120)
        took = time.time() - t0
        assert second.returncode == 2, second.stderr[-3000:]
        msg = second.stderr
        assert "in use by another run" in msg and f"pid {first.pid}" in msg, msg[-3000:]
        assert f"host {socket.gethostname()}" in msg
        assert snapshot(run_dir) == before, "the refused run wrote into the folder"
        print(f"second run refused in {took:.1f} s (interpreter start included)")
    finally:
        first.send_signal(signal.SIGKILL)  # a crash: no clean-up code runs
        first.wait()

    # Run 3 resumes at once: the kernel released the dead run's lock.
    step = load_checkpoint(list_checkpoints(run_dir)[-1])["step"]
    third = cli.run(
        cli.command("smoke_sere", "--resume", "auto", *common, f"engine.max_steps={step + 1}"),
        timeout=180,
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert load_checkpoint(list_checkpoints(run_dir)[-1])["step"] == step + 1
