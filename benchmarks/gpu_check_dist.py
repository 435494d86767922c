"""GPU check item (c): a two-process smoke run stopped and resumed, bit for bit against one that ran
through. Run as a module, this file is one rank of such a job (``RANK``/``WORLD_SIZE``/... set).

Backends: with two or more GPUs NCCL, one GPU per rank. On one GPU NCCL refuses two ranks
("Duplicate GPU detected"): NCCL is tried anyway and, when it fails, the reason is printed and both
ranks share the GPU over gloo. On the CPU gloo.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from selfsup_zoo.training.checkpoint import find_latest_checkpoint
from selfsup_zoo.training.engine import train
from selfsup_zoo.training.recipe import load_recipe

from .gpu_check_runs import smoke_overrides
from .gpu_check_table import Row

__all__ = ["resume_rows", "differences"]

_RECIPE = "smoke_care"
_TIMEOUT_S = 300.0  # one two-process job (the CPU quick mode on a busy 2-core machine: ~60 s)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _job(run_dir: Path, overrides: list[str], resume: bool, log: Path, timeout_s: float) -> None:
    """Run two ranks of ``python -m benchmarks.gpu_check_dist``; raise with the log on failure."""
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "benchmarks.gpu_check_dist", str(run_dir)]
    argv += ["--resume"] if resume else []
    argv += [f"--set={item}" for item in overrides]
    procs = []
    threads = max(1, (os.cpu_count() or 2) // 4)
    for rank in range(2):
        env = dict(
            os.environ,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_WORLD_SIZE="2",
            OMP_NUM_THREADS=str(threads),
        )
        out = open(log.with_name(f"{log.name}.rank{rank}.txt"), "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(argv, env=env, stdout=out, stderr=out), out))
    codes = []
    for proc, out in procs:
        try:
            codes.append(proc.wait(timeout=timeout_s))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
        out.close()
    if any(codes):
        tail = log.with_name(f"{log.name}.rank0.txt").read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"two-process run exited {codes}: {' | '.join(tail)}")


def differences(a: object, b: object, path: str = "") -> list[str]:
    """Where two checkpoint structures differ (tensors by dtype, shape and exact values)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path} (keys)"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path} (length)"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [path]


def _backends(device: str) -> list[tuple[str, str, float]]:
    """(backend, why, seconds the first job may take) to try in order."""
    if not device.startswith("cuda"):
        return [("gloo", "CPU", _TIMEOUT_S)]
    if torch.cuda.device_count() >= 2:
        return [("nccl", "one GPU per rank", _TIMEOUT_S)]
    # NCCL fails its first collective at once with "Duplicate GPU detected"; a short limit keeps a
    # hang from eating the check's five minutes
    return [
        ("nccl", "one GPU: NCCL usually refuses two ranks on it", 90.0),
        ("gloo", "one GPU, shared", _TIMEOUT_S),
    ]


def resume_rows(device: str, quick: bool, work: Path) -> list[Row]:
    """Rows of item (c): uninterrupted vs. stopped + ``--resume auto``, both with two processes.

    Args:
        device: ``cuda`` or ``cpu``.
        quick: fewer steps.
        work: scratch folder.

    Returns:
        One row: pass when the final checkpoints (method, optimizer, scaler, step) are equal.
    """
    total, first = (4, 2) if quick else (6, 3)
    base = smoke_overrides(_RECIPE, device, total, work / "cache") + [
        "engine.precision=fp32",
        "engine.global_batch=16",
    ]
    notes = []
    for backend, why, first_timeout in _backends(device):
        over = [*base, f"engine.dist_backend={backend}"]
        tag = f"{backend}"
        try:
            _job(work / f"dist-{tag}-full", over, False, work / f"dist-{tag}-full", first_timeout)
        except RuntimeError as err:
            notes.append(f"{backend} ({why}) failed: {str(err)[:200]}")
            print(f"  two-process run with {backend} failed, reason: {err}", flush=True)
            continue
        stopped = [*over, f"engine.max_steps={first}", f"engine.ckpt_every_steps={first}"]
        resumed_dir = work / f"dist-{tag}-resumed"
        _job(resumed_dir, stopped, False, work / f"dist-{tag}-part1", _TIMEOUT_S)
        _job(resumed_dir, over, True, work / f"dist-{tag}-part2", _TIMEOUT_S)
        full = find_latest_checkpoint(work / f"dist-{tag}-full")
        resumed = find_latest_checkpoint(resumed_dir)
        if full is None or resumed is None:
            raise RuntimeError("a run left no checkpoint")
        keys = ("step", "method", "optimizer", "scaler")
        diff = [d for k in keys for d in differences(full[1][k], resumed[1][k], k)]
        note = f"{backend} ({why}); steps {first}+{total - first} vs {total}"
        if notes:
            note += "; " + "; ".join(notes)
        if diff:
            row = Row("2-process resume (fp32)", "FAIL", note=f"{note}; differ at {diff[:3]}")
        else:
            row = Row("2-process resume (fp32)", "pass", note=f"{note}; bit-identical")
        break
    else:
        row = Row("2-process resume (fp32)", "FAIL", note="; ".join(notes))
    print(f"  {row.item}: {row.status} {row.note}", flush=True)
    return [row]


def _rank_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one rank of the GPU check's two-process run")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="a recipe override")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    recipe = load_recipe(_RECIPE, args.set)
    train(recipe, args.run_dir, resume="auto" if args.resume else None, dist_timeout_s=60.0)
    return 0


if __name__ == "__main__":
    sys.exit(_rank_main())
