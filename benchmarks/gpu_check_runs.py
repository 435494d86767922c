"""GPU check items that go through the real training engine: smoke recipes, two-process resume.

:func:`smoke_rows` runs a few steps of ``smoke_care`` / ``smoke_sere`` with
``selfsup_zoo.training.engine.train`` in this process at each engine setting the device supports
and compares the first step's loss (same seed, so the same weights and the same first batch) with a
CPU fp32 run of the same recipe. :func:`resume_rows` starts two processes (``python -m
benchmarks.gpu_check_dist`` is one rank), runs the smoke recipe uninterrupted and stopped + resumed
with ``--resume auto``, and compares the final checkpoints bit for bit.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

from selfsup_zoo.training.engine import train
from selfsup_zoo.training.recipe import load_recipe

from .gpu_check_table import Row, compare, isolated

__all__ = ["smoke_overrides", "run_smoke", "smoke_rows"]

RECIPES = ("smoke_care", "smoke_sere")


def smoke_overrides(
    recipe: str, device: str, steps: int, cache: Path, quick: bool = False
) -> list[str]:
    """``--set`` overrides of a short, quiet, deterministic smoke run on ``device`` (``quick``:
    global batch 8 instead of the recipe's 32)."""
    out = [
        f"engine.device={'cuda' if device.startswith('cuda') else 'cpu'}",
        f"engine.max_steps={steps}",
        f"engine.ckpt_every_steps={steps}",
        "engine.log_every=1",
        "engine.progress=false",
        "engine.export_at_end=false",
        "engine.tensorboard=false",
        "data.workers=0",
        f'data.cache_dir="{cache}"',
    ]
    if quick:
        out.append("engine.global_batch=8")
    if recipe == "smoke_sere":
        out.append("method.drop_path=0.0")  # drop path draws on the device's RNG: differs by device
    return out


def run_smoke(recipe: str, overrides: list[str], run_dir: Path) -> list[float]:
    """Train ``recipe`` with ``overrides`` in ``run_dir``; the total loss of each step, in order."""
    train(load_recipe(recipe, overrides), run_dir)
    rows = [line for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    return [float(r["loss"]) for r in map(json.loads, rows) if "loss" in r]


def _settings(device: str, quick: bool) -> list[tuple[str, list[str], str]]:
    """(name, overrides, precision) of every engine setting to try; skipped ones have no overrides
    and their reason as the name's note (returned separately by :func:`_skipped`)."""
    out = [("fp32", ["engine.precision=fp32"], "fp32"), ("bf16", ["engine.precision=bf16"], "bf16")]
    if device.startswith("cuda"):
        out += [
            ("fp16+GradScaler", ["engine.precision=fp16"], "fp16"),
            ("fp32+channels_last", ["engine.precision=fp32", "engine.channels_last=true"], "fp32"),
            ("fp32+fused AdamW/SGD", ["engine.precision=fp32", "optim.impl=fused"], "fp32"),
            ("bf16+compile", ["engine.precision=bf16", "engine.compile=true"], "bf16"),
        ]
    elif not quick:
        out.append(("fp32+channels_last", ["engine.channels_last=true"], "fp32"))
    return out


def _skipped(device: str, quick: bool) -> list[tuple[str, str]]:
    if device.startswith("cuda"):
        return []
    return [
        ("fp16+GradScaler", "fp16 autocast is a CUDA path (CPU autocast is bf16)"),
        ("fused optimizer", "fused optimizer kernels exist for CUDA only"),
        ("compile", "torch.compile on CPU needs minutes of C++ builds; run it on the GPU"),
    ]


def _smoke_row(
    item: str, recipe: str, overrides: list[str], precision: str, ref: float, run_dir: Path
) -> Row:
    losses = run_smoke(recipe, overrides, run_dir)
    shown = ", ".join(f"{x:.5f}" for x in losses)
    row = compare(item, precision, losses[0], ref, f"losses {shown}")
    if not all(math.isfinite(x) for x in losses):
        row.status = "FAIL"
    return row


def smoke_rows(device: str, quick: bool, work: Path) -> list[Row]:
    """Rows of item (a): each smoke recipe at each engine setting vs. its CPU fp32 run.

    Args:
        device: ``cuda`` or ``cpu``.
        quick: fewer steps.
        work: scratch folder (run folders, the unpacked digits).

    Returns:
        One row per recipe and setting (skipped settings included, with their reason).
    """
    steps = 2 if quick else 3
    rows: list[Row] = []
    for recipe in RECIPES:
        base = smoke_overrides(recipe, "cpu", steps, work / "cache", quick)
        try:
            ref = run_smoke(recipe, base, work / f"{recipe}-cpu-ref")
            print(f"{recipe} cpu fp32 reference losses: {[round(x, 6) for x in ref]}", flush=True)
        except Exception as err:  # noqa: BLE001 - without a reference the recipe's rows fail
            rows.append(Row(f"{recipe} cpu fp32 reference", "FAIL", note=f"{err}"[:160]))
            continue
        for name, extra, prec in _settings(device, quick):
            item = f"{recipe} {name}"
            over = smoke_overrides(recipe, device, steps, work / "cache", quick) + extra

            run_dir = work / item.replace(" ", "-")
            isolated(item, rows, partial(_smoke_row, item, recipe, over, prec, ref[0], run_dir))
        rows += [Row(f"{recipe} {n}", "skip", note=why) for n, why in _skipped(device, quick)]
    return rows
