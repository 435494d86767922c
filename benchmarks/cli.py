"""``python -m benchmarks run``: every case, ours and (optionally) the official code, one table.

    python -m benchmarks run [--only NAME ...] [--gpu] [--json out.json] [--rounds N] [--quick]
                             [--official-care DIR] [--official-sere DIR]

Cases: ``peak:matmul`` (the FLOP-rate reference), ``care_step``, ``sere_step`` (full training
steps), ``care_views``, ``sere_views`` (JPEG on disk -> the tensors the step consumes, one
worker), ``load:<arch>`` (pretrained load vs random-init build) and ``infer:<arch>`` (fp32, bf16,
channels_last) for every zoo backbone. ``--only`` keeps the cases whose name starts with one of
the given prefixes (``--only care load:care_resnet50``); the peak case runs whenever a step does.

Each (case, implementation, setting) runs in its own subprocess (``python -m benchmarks case ...``)
that warms up, times repeated calls and reports its peak memory (``ru_maxrss`` on CPU, the CUDA
allocator's peak on GPU). A round runs every subprocess once, in the same order, and ``--rounds``
rounds are run, so that the official code and ours alternate and a shared machine's drift hits
both. The table gives images/s min / median / max over all timed calls, peak memory, the steps'
FLOP rate with its share of the device's peak (GPU: the datasheet's dense bf16 peak; CPU: the rate
of case ``peak:matmul``, one large fp32 matmul measured in the same run, :mod:`benchmarks.peak`)
and the ratio of our median to the official (or, for ``load:``, of pretrained to random init).
``python -m benchmarks comm`` measures what one distributed step sends (:mod:`benchmarks.comm`).

Our cases run with the allocator settings our engine applies at start-up
(:func:`selfsup_zoo.training.allocator.keep_freed_memory`); the official code runs as it is
(setting ``official``, the reference of the ratios) and once more with those settings
(``malloc``), to show how much of a ratio they account for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from selfsup_zoo.training.allocator import keep_freed_memory

from . import comm
from .cases import prepare
from .report import PEAK_CASE, Row, format_table, measured_peak, peak_flops
from .timing import measure
from .zoo import architectures

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    """One subprocess of a round."""

    case: str
    impl: str  # "ours" | "official"
    setting: str
    warmup: int
    repeats: int


@dataclass
class Plan:
    """All runs of a round, and the options the subprocesses share."""

    runs: list[Run] = field(default_factory=list)
    official: dict[str, Path] = field(default_factory=dict)


def _plan(args: argparse.Namespace) -> Plan:
    plan = Plan()
    if args.official_care:
        plan.official["care"] = Path(args.official_care).resolve()
    if args.official_sere:
        plan.official["sere"] = Path(args.official_sere).resolve()
    step_reps = (0, 1) if args.quick else (1, 2)
    other_reps = (1, 1) if args.quick else (1, 3)
    cases: list[tuple[str, list[str], tuple[int, int]]] = [
        # the reference FLOP rate of the GFLOP/s column's shares (benchmarks/peak.py)
        (PEAK_CASE, ["fp32" if not args.gpu else "bf16"], (3, 10)),
        ("care_step", ["official", "best"], step_reps),
        ("sere_step", ["official", "best"], step_reps),
        # --quick leaves out the compiled kernel of "best": a compile per case would be most of
        # the runner's test (the kernel has tests of its own)
        ("care_views", ["official"] if args.quick else ["official", "best"], other_reps),
        ("sere_views", ["official"] if args.quick else ["official", "best"], other_reps),
    ]
    for arch in architectures(args.quick):
        cases.append((f"load:{arch}", ["random_init", "pretrained"], other_reps))
    for arch in architectures(args.quick):
        cases.append((f"infer:{arch}", ["fp32", "bf16", "channels_last"], other_reps))
    steps = any(c.endswith("_step") and any(c.startswith(p) for p in args.only) for c, *_ in cases)
    for case, settings, (warmup, repeats) in cases:
        # the steps' GFLOP/s shares need the peak case in the same run
        keep = not args.only or any(case.startswith(p) for p in args.only)
        if not keep and not (case == PEAK_CASE and steps):
            continue
        method = case.split("_")[0]
        if method in plan.official and not args.quick and "_" in case:
            # "malloc": the official code under our engine's allocator settings, which shows how
            # much of a ratio they explain (docs/training.md §8.1)
            for official_setting in ("official", "malloc"):
                plan.runs.append(Run(case, "official", official_setting, warmup, repeats))
        for setting in settings:
            plan.runs.append(Run(case, "ours", setting, warmup, repeats))
    return plan


def _run_one(
    run: Run, plan: Plan, args: argparse.Namespace, workdir: Path, first: bool
) -> dict[str, object]:
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "case",
        run.case,
        "--impl",
        run.impl,
        "--setting",
        run.setting,
        "--warmup",
        str(run.warmup),
        "--repeats",
        str(run.repeats),
        "--workdir",
        str(workdir),
        "--threads",
        str(args.threads),
    ]
    if run.impl == "official":
        command += ["--official-dir", str(plan.official[run.case.split("_")[0]])]
    command += ["--quick"] if args.quick else []
    command += [] if first else ["--no-flops"]  # a step's FLOPs are the same in every round
    command += ["--gpu"] if args.gpu else []
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:200]}
    result: dict[str, object] = json.loads(lines[-1])
    return result


def _run(args: argparse.Namespace) -> None:
    plan = _plan(args)
    load_before = os.getloadavg()
    rounds = 1 if args.quick and args.rounds is None else (args.rounds or 3)
    results: dict[Run, list[dict[str, object]]] = {run: [] for run in plan.runs}
    with tempfile.TemporaryDirectory(prefix="selfsup_zoo_bench_") as tmp:
        workdir = Path(tmp)
        for r in range(rounds):
            for run in plan.runs:
                print(f"round {r + 1}/{rounds}: {run.case} {run.impl} {run.setting}", flush=True)
                results[run].append(_run_one(run, plan, args, workdir, first=r == 0))
    load_after = os.getloadavg()
    rows = [Row.from_results(run.case, run.impl, run.setting, res) for run, res in results.items()]
    # a GPU's datasheet peak when it is known, else the peak:matmul case of this run
    peak = (peak_flops() if args.gpu else None) or measured_peak(rows)
    print(format_table(rows, load_before, load_after, rounds, peak))
    if args.json:
        payload = {
            "load_average": {"before": load_before, "after": load_after},
            "rounds": rounds,
            "peak_flops": peak,
            "rows": [row.as_dict() for row in rows],
        }
        Path(args.json).write_text(json.dumps(payload, indent=1))


def _case(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = "cuda" if args.gpu else "cpu"
    workdir = Path(args.workdir)
    official = Path(args.official_dir) if args.official_dir else None
    if args.impl == "ours" or args.setting == "malloc":
        keep_freed_memory()  # what our engine does at start-up (engine.keep_freed_memory)
    prepared = prepare(args.name, args.impl, args.setting, device, workdir, args.quick, official)
    if args.no_flops:
        prepared.flops = None  # counting runs one more call
    measured = measure(prepared, args.warmup, args.repeats)
    print(json.dumps(measured.as_dict()))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m benchmarks`` (``comm``: :func:`benchmarks.comm.main`)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["comm"]:
        comm.main(argv[1:])
        return
    parser = argparse.ArgumentParser(
        epilog="python -m benchmarks comm --help: the collectives of one distributed step",
        prog="python -m benchmarks",
        description=__doc__.split("\n")[0],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the cases and print the table")
    run.add_argument("--only", nargs="+", default=[], help="case name prefixes to keep")
    run.add_argument("--gpu", action="store_true", help="steps and inference on CUDA")
    run.add_argument("--json", help="also write the results to this file")
    run.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    run.add_argument("--quick", action="store_true", help="tiny sizes, one round (tests)")
    run.add_argument("--threads", type=int, default=2, help="torch threads of the step cases")
    run.add_argument("--official-care", help="work tree of the official CARE repository")
    run.add_argument("--official-sere", help="work tree of the official SERE repository")
    case = sub.add_parser("case", help="(internal) time one case in this process")
    case.add_argument("name")
    case.add_argument("--impl", choices=["ours", "official"], default="ours")
    case.add_argument("--setting", default="official")
    case.add_argument("--warmup", type=int, default=1)
    case.add_argument("--repeats", type=int, default=3)
    case.add_argument("--workdir", required=True)
    case.add_argument("--threads", type=int, default=2)
    case.add_argument("--official-dir")
    case.add_argument("--quick", action="store_true")
    case.add_argument("--gpu", action="store_true")
    case.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    args = parser.parse_args(argv)
    if args.command == "run":
        _run(args)
    else:
        _case(args)
