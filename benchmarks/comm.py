"""What one distributed training step sends, and the multi-GPU scaling that allows.

    python -m benchmarks comm [--only care sere] [--processes 2] [--quick] [--json out.json]
                              [--gpus N --bus-gbps B --latency-us L --step-seconds S [S]]

Each method's step (:mod:`benchmarks.steps` with ``distributed=True``: SyncBatchNorm and DDP, as
the engine sets up a multi-process run) runs in ``--processes`` real gloo processes on this CPU.
After one warm-up step (DDP builds its gradient buckets in the first), one step runs under
:mod:`torch.profiler`, which records every collective that the process group ran: its kind
(``gloo:all_reduce``, ...), calls and elements. A DDP communication hook that records each
bucket's size and then runs torch's own all-reduce hook tells which all-reduces are the gradient
buckets; the rest are the SyncBatchNorm statistics and the method's own (the iBOT centre). Neither
volume depends on the machine or the batch: the buckets hold the trainable parameters, the
SyncBatchNorm reductions the channels of every synchronised BatchNorm.

With ``--gpus N --bus-gbps B --latency-us L --step-seconds S`` (S: one GPU's compute time per step,
from ``python -m benchmarks run --gpu``, one per method in ``--only`` order; B and L: what an NCCL
benchmark measures on that machine) it bounds the scaling efficiency on N GPUs,
``S / (S + exposed communication)``, where a ring all-reduce of b bytes takes
``2 (N - 1) / N * b / B`` plus L per call: the lower bound exposes every collective, the upper
bound hides the gradient buckets behind the backward pass, as DDP overlaps them, and exposes only
the rest, which sits on the forward and backward path (docs/training.md §8.4).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.profiler import ProfilerActivity, profile

from .gpu_check_dist import free_port
from .steps import prepare_care, prepare_sere

__all__ = ["Collective", "StepTraffic", "measure_step", "exposed_seconds", "main"]

#: Every collective of these steps moves fp32 tensors (the gradients of fp32 parameters, also
#: under autocast, the SyncBatchNorm statistics, the iBOT centre): 4 bytes an element.
_BYTES = 4


@dataclass
class Collective:
    """One kind of collective over one step of one process."""

    kind: str  # the process group's profiler name, e.g. "gloo:all_reduce"
    calls: int
    elements: int


@dataclass
class StepTraffic:
    """The collectives of one training step of one process."""

    method: str
    processes: int
    trainable: int  # elements of the parameters that get gradients
    collectives: list[Collective]  # every collective, by kind
    buckets: list[int] = field(default_factory=list)  # elements of each DDP gradient all-reduce

    def others(self) -> list[Collective]:
        """The collectives that are not gradient buckets (SyncBatchNorm, the method's own)."""
        rest = []
        for c in self.collectives:
            if c.kind == "gloo:all_reduce":
                c = Collective(c.kind, c.calls - len(self.buckets), c.elements - sum(self.buckets))
            if c.calls:
                rest.append(c)
        return rest

    def summary(self) -> str:
        """Readable lines: the buckets, then every other kind."""
        lines = [
            f"{self.method}: {self.trainable:,} trainable elements; gradient all-reduce "
            f"{len(self.buckets)} bucket(s), {sum(self.buckets) * _BYTES / 1e6:.1f} MB"
        ]
        for c in self.others():
            lines.append(
                f"{self.method}: {c.kind} {c.calls} call(s), {c.elements * _BYTES / 1e6:.3f} MB"
            )
        return "\n".join(lines)


def _count(events: Iterable[torch.autograd.profiler_util.FunctionEvent]) -> list[Collective]:
    kinds: dict[str, Collective] = {}
    for event in events:
        if not event.name.startswith("gloo:"):
            continue
        # input_shapes: one list of sides per input (typed as a flat list of ints in torch)
        shapes = cast(list[list[int]], event.input_shapes)
        elements = math.prod(shapes[0]) if shapes and shapes[0] else 0
        entry = kinds.setdefault(event.name, Collective(event.name, 0, 0))
        entry.calls += 1
        entry.elements += elements
    return sorted(kinds.values(), key=lambda c: c.kind)


def _recording_hook(
    sizes: list[int], bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    sizes.append(bucket.buffer().numel())
    return default_hooks.allreduce_hook(None, bucket)  # type: ignore[arg-type]  # None: default group


def _rank(rank: int, world: int, port: int, method: str, quick: bool, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        prepare = prepare_care if method == "care" else prepare_sere
        prepared = prepare("official", "cpu", quick, distributed=True)
        ddp = prepared.model
        assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
        sizes: list[int] = []
        # through a lambda: DDP checks the hook's annotations against the classes, and this
        # module's are strings (``from __future__ import annotations``)
        ddp.register_comm_hook(sizes, lambda state, bucket: _recording_hook(state, bucket))
        prepared.call()  # DDP builds its buckets during the first step
        sizes.clear()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            prepared.call()
        if rank == 0:
            trainable = sum(p.numel() for p in ddp.parameters() if p.requires_grad)
            traffic = StepTraffic(method, world, trainable, _count(prof.events()), sizes)
            Path(out).write_text(json.dumps(asdict(traffic)))
    finally:
        dist.destroy_process_group()


def measure_step(method: str, processes: int = 2, quick: bool = False) -> StepTraffic:
    """The collectives of one step of ``method`` in ``processes`` gloo processes.

    Args:
        method: ``care`` or ``sere``.
        processes: World size (2 or more).
        quick: The runner's tiny networks (a test of the machinery).

    Returns:
        What process 0 ran.
    """
    with tempfile.TemporaryDirectory(prefix="selfsup_zoo_comm_") as tmp:
        out = Path(tmp) / "traffic.json"
        args = (processes, free_port(), method, quick, str(out))
        mp.start_processes(_rank, args=args, nprocs=processes, start_method="spawn")
        found = json.loads(out.read_text())
    found["collectives"] = [Collective(**c) for c in found["collectives"]]
    return StepTraffic(**found)


def exposed_seconds(
    traffic: StepTraffic, gpus: int, bus_gbps: float, latency_us: float
) -> tuple[float, float]:
    """Communication time of one step on ``gpus`` GPUs: all of it, and all but the gradients.

    Args:
        traffic: :func:`measure_step`'s result.
        gpus: GPUs of the run.
        bus_gbps: NCCL bus bandwidth in GB/s (nccl-tests' ``busbw``).
        latency_us: Time of one small collective in microseconds.

    Returns:
        ``(every collective, every collective but the gradient buckets)`` in seconds.
    """
    ring = 2 * (gpus - 1) / gpus  # a ring all-reduce moves this many times its bytes per GPU

    def seconds(calls: int, elements: int) -> float:
        return calls * latency_us * 1e-6 + ring * elements * _BYTES / (bus_gbps * 1e9)

    rest = sum(seconds(c.calls, c.elements) for c in traffic.others())
    return rest + seconds(len(traffic.buckets), sum(traffic.buckets)), rest


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m benchmarks comm``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks comm", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--only", nargs="+", choices=["care", "sere"], default=["care", "sere"])
    parser.add_argument("--processes", type=int, default=2, help="gloo processes (default 2)")
    parser.add_argument("--quick", action="store_true", help="tiny networks (tests)")
    parser.add_argument("--json", help="also write the measurements to this file")
    parser.add_argument("--gpus", type=int, help="GPUs of the run to estimate")
    parser.add_argument("--bus-gbps", type=float, help="NCCL bus bandwidth, GB/s")
    parser.add_argument("--latency-us", type=float, help="one small collective, microseconds")
    parser.add_argument("--step-seconds", type=float, nargs="+", help="one GPU's step, seconds")
    args = parser.parse_args(argv)
    if args.processes < 2:
        parser.error("--processes must be at least 2: one process runs no collective")
    estimate = [args.gpus, args.bus_gbps, args.latency_us, args.step_seconds]
    if any(x is not None for x in estimate) and not all(x is not None for x in estimate):
        parser.error("an estimate needs all of --gpus, --bus-gbps, --latency-us, --step-seconds")
    if args.step_seconds is not None and len(args.step_seconds) != len(args.only):
        parser.error(f"--step-seconds needs one value per method of --only ({len(args.only)})")
    results = []
    for i, method in enumerate(args.only):
        traffic = measure_step(method, args.processes, args.quick)
        print(traffic.summary(), flush=True)
        entry: dict[str, object] = asdict(traffic)
        if args.step_seconds is not None:
            step = args.step_seconds[i]
            every, rest = exposed_seconds(traffic, args.gpus, args.bus_gbps, args.latency_us)
            low, high = step / (step + every), step / (step + rest)
            print(
                f"{method}: on {args.gpus} GPUs at {args.bus_gbps:g} GB/s and "
                f"{args.latency_us:g} us a call, {1e3 * every:.1f} ms of collectives a step, "
                f"{1e3 * rest:.1f} ms of them on the critical path: scaling efficiency "
                f"{100 * low:.0f}-{100 * high:.0f} % of a {step:g} s step"
            )
            entry["efficiency"] = {"low": low, "high": high, "step_seconds": step}
        results.append(entry)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
