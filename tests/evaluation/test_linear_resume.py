"""A linear probe killed with SIGKILL mid-run resumes to bit-identical heads (real subprocess)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from helpers.eval_cli import cli_args, kill_when_written, run_eval

from selfsup_zoo.training.checkpoint import list_checkpoints, load_checkpoint


def _args(tiny_hub: Path, train: Path, val: Path, out: Path, *extra: str) -> list[str]:
    return cli_args(
        "linear",
        f"local-dir:{tiny_hub}",
        train,
        val,
        out,
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
    )


def test_sigkill_then_resume_is_bit_identical(tmp_path, tiny_hub, make_folder):
    train = make_folder("train", {"a": 8, "b": 8, "c": 8}, seed=0, sizes=(48, 64))
    val = make_folder("val", {"a": 2, "b": 2, "c": 2}, seed=1)
    run_eval(_args(tiny_hub, train, val, tmp_path / "ref"), tmp_path)

    out = tmp_path / "killed"
    target = out / "run" / "checkpoints" / "step_000000004.pt"  # mid epoch 1 (8 steps/epoch)
    kill_when_written(_args(tiny_hub, train, val, out), target, tmp_path, timeout=240)
    assert load_checkpoint(list_checkpoints(out / "run")[-1])["step"] < 24, "killed before the end"
    assert not (out / "results.json").exists()

    run_eval(_args(tiny_hub, train, val, out, "--resume", "auto"), tmp_path)
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
