"""The disk fills while a checkpoint is written: a real failed write, not a mock.

The resumed run is a fresh process whose file size limit (``RLIMIT_FSIZE``) is half a checkpoint,
with ``SIGXFSZ`` ignored, so the kernel fails the checkpoint's write with ``EFBIG`` exactly as a
full disk fails it with ``ENOSPC`` (``log.jsonl`` and ``recipe.json`` stay far below the limit).
The previous checkpoint must stay intact and loadable, no temporary file may be left, and the run
must stop with an error naming the file, the space it needed and what to do. A second test gets a
real ``ENOSPC`` from ``/dev/full`` to check the full-disk wording.

Runtime on 2 shared CPU cores: about 20-40 s.
"""

from __future__ import annotations

import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers.tiny_runs import tensors_equal, tiny

from selfsup_zoo.training.checkpoint import (
    CheckpointWriteError,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from selfsup_zoo.training.engine import train
from selfsup_zoo.training.recipe import load_recipe
from selfsup_zoo.weights import file_sha256


def test_checkpoint_write_failing_keeps_previous_and_stops_clearly(tmp_path, images, cache, cli):
    run = tmp_path / "run"
    overrides = tiny(images, "engine.ckpt_every_steps=2", "engine.keep_last=1")
    overrides.append(f'data.cache_dir="{cache}"')
    train(load_recipe("smoke_sere", [*overrides, "engine.max_steps=2"]), run)
    good = checkpoint_path(run, 2)
    good_sha, size = file_sha256(good), good.stat().st_size
    limit = size // 2

    def limit_file_size() -> None:  # runs in the child before exec; both settings survive exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = cli.env()
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = cli.command(
        "smoke_sere",
        "--output-dir",
        str(tmp_path),
        "--run-name",
        "run",
        "--resume",
        "auto",
        "--set",
        *overrides,
        "engine.max_steps=4",
    )
    failed = subprocess.run(
        cmd,
        cwd=cli.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=limit_file_size,
    )
    assert failed.returncode == 2, failed.stderr[-3000:]
    err = failed.stderr
    assert f"could not write checkpoint {checkpoint_path(run, 4)}" in err, err[-3000:]
    assert "size limit" in err and "MiB" in err and "--resume auto" in err
    # (a Traceback would mean the error escaped the command line's handling)
    assert "Traceback" not in err

    # The previous checkpoint is untouched and loads; no temporary file is left behind.
    assert list_checkpoints(run) == [good]
    assert file_sha256(good) == good_sha
    assert load_checkpoint(good)["step"] == 2
    assert [p.name for p in (run / "checkpoints").iterdir()] == [good.name]

    # With space again, the run continues from that checkpoint and ends as an uninterrupted one.
    (run / "checkpoints" / ".step_000000004.pt.tmp").write_bytes(b"debris of a hard crash")
    res = train(load_recipe("smoke_sere", [*overrides, "engine.max_steps=4"]), run, resume="auto")
    assert res.step == 4
    assert not list((run / "checkpoints").glob(".*.tmp")), "stale temp file cleaned at start"
    ref = train(load_recipe("smoke_sere", [*overrides, "engine.max_steps=4"]), tmp_path / "ref")
    a, b = load_checkpoint(ref.last_checkpoint), load_checkpoint(res.last_checkpoint)
    for key in ("method", "optimizer", "step"):
        assert tensors_equal(a[key], b[key], key) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs: writes past its size fail with ENOSPC ("No space left on device")."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_full_disk_error_names_file_space_and_remedy(small_disk: Path) -> None:
    """ENOSPC from the kernel on a full (small) file system: a clear message, the previous
    checkpoint intact, no temporary file left."""
    path = small_disk / "checkpoints" / "step_000000002.pt"
    path.parent.mkdir()
    path.write_bytes(b"previous")
    state = {"format": "x", "method": {"w": torch.zeros(1 << 18)}}  # 1 MiB of tensors
    with pytest.raises(CheckpointWriteError) as err:
        save_checkpoint(state, path)
    msg = str(err.value)
    assert f"could not write checkpoint {path}: the disk is full" in msg, msg
    assert "needs about 1.0 MiB (1048576 bytes" in msg and "--resume auto" in msg
    assert path.read_bytes() == b"previous"
    assert [p.name for p in path.parent.iterdir()] == [path.name], "temporary file removed"
