"""Seconds per CARE training step on this machine (docs/methods/care.md §11: same protocol).

One step = EMA update of the teacher + CARE forward (two student calls, two teacher calls) +
backward + ``torch.optim.SGD`` step (momentum 0.9, weight decay 1e-4 on all student parameters),
float32, random inputs. ``--batch`` is images per view, so a step sees 2 x batch view-images. The
first steps warm up allocators and kernels; the median is taken over the steps after ``--warmup``.
The runner ``python -m benchmarks run --only care_step`` times the same step beside the official
code; this script stays for single runs.

    python benchmarks/care_step.py --arch resnet50 --batch 8 --size 224 --steps 9 --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup_zoo.training.methods.base import StepInfo  # noqa: E402
from selfsup_zoo.training.methods.care import CareConfig, CareMethod  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet50", help="timm ResNet architecture")
    parser.add_argument("--batch", type=int, default=8, help="images per view")
    parser.add_argument("--size", type=int, default=224, help="view side in pixels")
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument(
        "--warmup", type=int, default=2, help="leading steps left out of the median"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "einsum"])
    parser.add_argument(
        "--smoke", action="store_true", help="use CareConfig.smoke() (ignores --arch)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.smoke:
        cfg = CareConfig.smoke()
        cfg.img_size = args.size
    else:
        cfg = CareConfig(arch=args.arch, img_size=args.size)
    cfg.attention = args.attention
    method = CareMethod(cfg).train()
    params = method.param_groups()[0]["params"]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)
    batch = {
        "x1": torch.randn(args.batch, 3, args.size, args.size),
        "x2": torch.randn(args.batch, 3, args.size, args.size),
    }
    times, cpu_times = [], []
    for step in range(args.steps):
        info = StepInfo(step=step, epoch=0, steps_per_epoch=args.steps, total_steps=args.steps)
        momentum = 1 - (1 - 0.99) * (math.cos(math.pi * step / args.steps) + 1) / 2
        start, cpu_start = time.perf_counter(), time.process_time()
        method.update_teacher(momentum)
        terms = method(batch, info)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        print(
            f"step {step + 1}: {times[-1]:.2f} s wall, {cpu_times[-1]:.2f} s CPU, "
            f"loss {terms['loss'].item():.4f}",
            flush=True,
        )
    timed = times[args.warmup :] or times
    median = statistics.median(timed)
    # on a shared machine wall time includes waiting for the cores; CPU time / threads estimates
    # what the step would take with the threads to itself (exact only when threads scale perfectly)
    cpu_median = statistics.median(cpu_times[args.warmup :] or cpu_times)
    result = {
        "arch": "smoke" if args.smoke else args.arch,
        "batch_per_view": args.batch,
        "size": args.size,
        "threads": args.threads,
        "attention": args.attention,
        "step_s": [round(t, 3) for t in times],
        "median_s": round(median, 3),
        "cpu_s": [round(t, 3) for t in cpu_times],
        "median_cpu_s_per_thread": round(cpu_median / args.threads, 3),
        "images_per_s": round(args.batch / median, 3),
        "view_images_per_s": round(2 * args.batch / median, 3),
    }
    print(
        f"median over steps {args.warmup + 1}-{args.steps}: {median:.2f} s/step, "
        f"{args.batch / median:.2f} images/s ({2 * args.batch / median:.2f} view-images/s); "
        f"CPU {cpu_median:.2f} s/step = {cpu_median / args.threads:.2f} s per thread"
    )
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
