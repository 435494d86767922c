"""A linear probe killed with SIGKILL mid-run resumes to bit-identical heads (real subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from selfsup_zoo.training.checkpoint import list_checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _command(tiny_hub: Path, train: Path, val: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "selfsup_zoo.evaluation",
        "linear",
        f"local-dir:{tiny_hub}",
        "--train",
        str(train),
        "--val",
        str(val),
        "--out",
        str(out),
        "--epochs",
        "3",
        "--global-batch",
        "3",
        "--eval-epochs",
        "1,2",
        "--grid-lrs",
        "0.1,0.4",
        "--ckpt-every",
        "2",
        "--override",
        "engine.keep_last=50",
        "--no-progress",
        "--no-feature-cache",
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def test_sigkill_then_resume_is_bit_identical(tmp_path, tiny_hub, make_folder):
    train = make_folder("train", {"a": 8, "b": 8, "c": 8}, seed=0, sizes=(48, 64))
    val = make_folder("val", {"a": 2, "b": 2, "c": 2}, seed=1)
    ref = subprocess.run(
        _command(tiny_hub, train, val, tmp_path / "ref"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _command(tiny_hub, train, val, out),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = out / "run" / "checkpoints" / "step_000000004.pt"  # mid epoch 1 (8 steps/epoch)
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(list_checkpoints(out / "run")[-1])["step"] < 24, "killed before the end"
    assert not (out / "results.json").exists()

    resumed = subprocess.run(
        _command(tiny_hub, train, val, out, "--resume", "auto"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_checkpoint(tmp_path / "ref" / "run" / "checkpoints" / "step_000000024.pt")
    b = load_checkpoint(out / "run" / "checkpoints" / "step_000000024.pt")
    assert a["method"].keys() == b["method"].keys()
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), key
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for ga, gb in zip(sa.values(), sb.values(), strict=True):
        assert torch.equal(ga["momentum_buffer"], gb["momentum_buffer"])
    ra = json.loads((tmp_path / "ref" / "results.json").read_text())
    rb = json.loads((out / "results.json").read_text())
    assert ra["metrics"] == rb["metrics"]
    assert ra["details"]["evaluations"] == rb["details"]["evaluations"]
