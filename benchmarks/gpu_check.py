"""One script that exercises the GPU paths of the package and says pass/fail for each.

    python -m benchmarks.gpu_check [--device cuda] [--quick] [--json out.json]

Items (each isolated: one that fails prints its error and the others still run):

(a) a few steps of ``smoke_care`` and ``smoke_sere`` through the real engine at fp32, bf16, fp16
    (GradScaler), channels_last, fused optimizers and ``torch.compile``, where the device has them;
(b) the ImageNet-size CARE (ResNet-50 + T-stream, 2 x 224 px) and SERE (ViT-S/16, 2 x 224 + 10 x
    96) steps at each precision and at per-GPU batches 32, 64 and 128 (as memory allows), with
    step time and peak memory;
(c) a two-process smoke run stopped and resumed with ``--resume auto``, bit-identical (fp32) to a
    run that went through.

Every loss is compared with a CPU fp32 value the script computes itself (same weights, same batch),
at the tolerances of :data:`benchmarks.gpu_check_table.TOLERANCE`; TF32 is off in fp32. The exit
code is 0 only when no row failed. ``--device cpu --quick`` runs the same code paths at tiny sizes
on the CPU (fp32 and bf16) in well under a minute: CI runs that, never the GPU version.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from .gpu_check_dist import resume_rows
from .gpu_check_runs import smoke_rows
from .gpu_check_steps import step_rows
from .gpu_check_table import Row, all_passed, format_table, isolated

__all__ = ["main"]

ITEMS = ("smoke", "steps", "resume")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="tiny sizes, fewer steps")
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    p.add_argument(
        "--only", nargs="+", choices=ITEMS, default=list(ITEMS), help="run only these items"
    )
    p.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    return p


def _environment(device: str) -> str:
    text = f"torch {torch.__version__}, device {device}"
    if device == "cuda":
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        text += f" ({torch.cuda.device_count()} x {names[0]}, CUDA {torch.version.cuda})"
    return text


def run_items(device: str, quick: bool, only: list[str], work: Path) -> list[Row]:
    """Run the chosen items and collect their rows (an item that raises is one FAIL row)."""
    rows: list[Row] = []
    items = {
        "smoke": lambda: smoke_rows(device, quick, work / "smoke"),
        "steps": lambda: step_rows(device, quick, steps=2 if quick else 3),
        "resume": lambda: resume_rows(device, quick, work / "resume"),
    }
    for name in ITEMS:
        if name not in only:
            continue
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        isolated(name, rows, items[name], echo=False)  # the items print their rows
        print(f"== {name} done in {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the check, print the table; 0 when every row passed (or was skipped with a reason).

    Args:
        argv: the command line (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 all passed, 1 a row failed, 2 no CUDA device for ``--device cuda``.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here; use --device cpu (--quick)", file=sys.stderr)
        return 2
    # fp32 must be fp32: TF32 matmuls/convolutions would be 1e-3 off the CPU reference
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(_environment(args.device), flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="selfsup_zoo_gpu_check_") as tmp:
        work = args.workdir or Path(tmp)
        rows = run_items(args.device, args.quick, args.only, work)
    ok = all_passed(rows)
    print()
    print(format_table(rows))
    print(
        f"\n{'PASS' if ok else 'FAIL'}: {sum(r.status == 'pass' for r in rows)} passed, "
        f"{sum(r.status == 'FAIL' for r in rows)} failed, "
        f"{sum(r.status == 'skip' for r in rows)} skipped in {time.perf_counter() - start:.0f} s"
    )
    if args.json:
        payload = {
            "environment": _environment(args.device),
            "passed": ok,
            "rows": [dataclasses.asdict(r) for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
