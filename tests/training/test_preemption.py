"""SIGTERM / SIGINT stop a run at a step boundary with a checkpoint; the resumed run is the
uninterrupted one, bit for bit (tiny SERE model on 48 real digits, 12 steps).

Multi-process runs are real gloo process groups of two processes forked from the test process
(``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``, env:// init, no launcher): forking skips
the ~20 s of imports a fresh interpreter pays on a busy machine. One test goes through the command
line in a fresh interpreter, for the exit status and the printed resume command.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers.forked_jobs import run_job, start_job, wait_job
from helpers.run_compare import assert_same_run as same_run
from helpers.run_compare import log_rows
from helpers.tiny_runs import TINY_SERE

from selfsup_zoo.training import reproduce
from selfsup_zoo.training.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
from selfsup_zoo.training.engine import train
from selfsup_zoo.training.preemption import PREEMPTED_MARKER, PreemptionWatch
from selfsup_zoo.training.recipe import load_recipe

TINY = [*TINY_SERE, "engine.tensorboard=false"]
STEPS = 12


def overrides(images: Path, cache: Path, *extra: str) -> list[str]:
    return [*TINY, f'data.root="{images}"', f'data.cache_dir="{cache}"', "data.workers=0", *extra]


def assert_same_run(ref: Path, other: Path) -> None:
    same_run(ref, other, STEPS)


def signal_after_rows(pid: int, sig: signal.Signals, run: Path, rows: int = 2) -> threading.Thread:
    """Send ``sig`` to ``pid`` once ``run/log.jsonl`` has ``rows`` rows (a thread)."""

    def wait_and_send() -> None:
        deadline = time.time() + 120
        while log_rows(run) < rows and time.time() < deadline:
            time.sleep(0.005)
        os.kill(pid, sig)

    thread = threading.Thread(target=wait_and_send, daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------------------------------
# One process, in this interpreter
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, images: Path, cache: Path) -> Path:
    """The uninterrupted 12-step run (one process)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    train(load_recipe("smoke_sere", overrides(images, cache)), run)
    return run


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_checkpoints_at_the_step_boundary_and_resume_is_bit_identical(
    tmp_path, images, cache, reference, sig
):
    recipe = load_recipe("smoke_sere", overrides(images, cache))
    run = tmp_path / "run"
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    sender = signal_after_rows(os.getpid(), sig, run)
    res = train(recipe, run)
    sender.join()
    # The library left no handler behind.
    assert {s: signal.getsignal(s) for s in before} == before
    assert res.preempted and res.stop_signal == sig.name
    assert 2 <= res.step < STEPS
    assert res.last_checkpoint == checkpoint_path(run, res.step)
    assert load_checkpoint(res.last_checkpoint)["step"] == res.step
    assert log_rows(run) == res.step  # the step in flight finished and was logged
    marker = json.loads((run / PREEMPTED_MARKER).read_text())
    assert marker == {"step": res.step, "signal": sig.name, "checkpoint": str(res.last_checkpoint)}
    assert res.export_dir is None

    done = train(recipe, run, resume="auto")
    assert not done.preempted and done.step == STEPS
    assert not (run / PREEMPTED_MARKER).exists()
    assert_same_run(reference, run)


def test_watch_restores_the_previous_handlers_and_a_second_signal_forces(tmp_path):
    seen: list[int] = []

    def mine(signum: int, frame: object) -> None:
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, mine)
    # Python's own SIGINT handler as the previous one, whatever this process inherited (a job
    # started in the background of a non-interactive shell starts with SIGINT ignored).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with PreemptionWatch() as watch:
            assert signal.getsignal(signal.SIGTERM) is not mine
            signal.raise_signal(signal.SIGTERM)
            assert watch.requested and watch.received == signal.SIGTERM and seen == []
            signal.raise_signal(signal.SIGTERM)  # second one: the previous handler's effect
            assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is mine
        with PreemptionWatch() as watch:
            signal.raise_signal(signal.SIGINT)
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


# --------------------------------------------------------------------------------------------------
# Two gloo processes, forked from this one
# --------------------------------------------------------------------------------------------------
def job_argv(out: Path, images: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "smoke_sere",
        "--output-dir",
        str(out),
        "--dist-timeout",
        "30",
        "--set",
        *overrides(images, cache, "engine.per_device_batch=4"),
        *extra,
    ]


@pytest.fixture(scope="module")
def reference2(tmp_path_factory: pytest.TempPathFactory, images: Path, cache: Path) -> Path:
    """The uninterrupted 12-step run on two processes."""
    out = tmp_path_factory.mktemp("reference2")
    run_job(job_argv(out, images, cache), out / "logs")
    return out / "smoke_sere"


def test_sigterm_to_one_of_two_ranks_stops_both_at_the_same_step(
    tmp_path, images, cache, reference2
):
    logs = tmp_path / "logs"
    argv = job_argv(tmp_path, images, cache)
    run = tmp_path / "smoke_sere"
    procs = start_job(argv, logs)
    pid1 = procs[1].pid
    assert pid1 is not None
    signal_after_rows(pid1, signal.SIGTERM, run).join()
    sent = time.time()
    codes = wait_job(procs, 30)
    assert time.time() - sent < 30
    out0 = (logs / "rank0.txt").read_text()
    assert codes == [0, 0], out0[-3000:] + (logs / "rank1.txt").read_text()[-3000:]
    line = [r for r in out0.splitlines() if r.startswith("preempted at step ")]
    assert len(line) == 1, out0[-3000:]
    step = int(line[0].split()[3].rstrip(":"))
    assert 2 <= step < STEPS
    assert line[0].endswith("--resume auto") and "torchrun" in line[0]
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(run)][-1] == step
    # Rank 0 never saw the signal: the marker says so, with the agreed step.
    assert json.loads((run / PREEMPTED_MARKER).read_text())["step"] == step

    run_job([*argv[:3], "--resume", "auto", *argv[3:]], tmp_path / "logs2")
    assert_same_run(reference2, run)


# --------------------------------------------------------------------------------------------------
# The command line, in a fresh interpreter
# --------------------------------------------------------------------------------------------------
def test_cli_exits_0_within_30_s_with_the_resume_command(tmp_path, images, cache, cli):
    # A run that would export and evaluate at its end: a preempted one does neither.
    extra = overrides(
        images,
        cache,
        "data.workers=1",  # a loader worker shares the group
        "engine.export_at_end=true",
        f'eval.train="{images}"',
        f'eval.val="{images}"',
        'eval.protocols=["knn"]',
    )
    argv = ["smoke_sere", "--output-dir", str(tmp_path), "--set", *extra]
    proc = subprocess.Popen(
        cli.command(*argv),
        cwd=cli.root,
        env=cli.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    run = tmp_path / "smoke_sere"
    deadline = time.time() + 120
    while log_rows(run) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    sent = time.time()
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole group
    stdout, stderr = proc.communicate(timeout=60)
    assert time.time() - sent < 30
    assert proc.returncode == 0, stderr[-3000:]
    lines = [r for r in stdout.splitlines() if r.startswith("preempted at step ")]
    assert len(lines) == 1, stdout
    step = int(lines[0].split()[3].rstrip(":"))
    command = lines[0].split(": resume with ", 1)[1]
    expected = shlex.join(["python", "-m", "selfsup_zoo.training.reproduce", *argv])
    assert command == expected + " --resume auto"
    assert load_checkpoint(checkpoint_path(run, step))["step"] == step
    # No export, no final evaluations, no report: only the resumed run ends with them.
    assert (run / PREEMPTED_MARKER).is_file()
    assert not (run / "export").exists() and not (run / "eval").exists()
    assert "final evaluations" not in stdout + stderr and "report:" not in stdout
    # The resumed run finishes, exports, evaluates and reports (in this interpreter).
    assert reproduce.main([*argv, "--resume", "auto"]) == 0
    assert (run / "export" / "model.safetensors").is_file()
    assert (run / "eval" / "knn" / "results.json").is_file()
    assert (run / "report.json").is_file()
