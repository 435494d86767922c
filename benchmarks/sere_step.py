"""Seconds per full SERE training step on CPU: student + teacher forward, backward, AdamW step.

Example::

    python benchmarks/sere_step.py --arch vit_small_patch16_224 --batch 8 --local-crops 10 --steps 5

Inputs are random tensors with the recipe's shapes (2 x 224 px global + L x 96 px local crops,
block masks on the global views, random crop boxes); the step also runs the last-layer hook and the
EMA teacher update, as the engine does. The first (warm-up) step is not counted. The runner
``python -m benchmarks run --only sere_step`` times the same step (:mod:`benchmarks.steps`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    import selfsup_zoo  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup_zoo.training.methods.base import StepInfo
from selfsup_zoo.training.methods.sere import SereConfig, SereMethod


def make_batch(
    batch: int, local_crops: int, patch: int, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random batch in the layout the data pipeline produces (as :func:`benchmarks.steps.sere_batch`
    for 224/96 px crops)."""
    side = 224 // patch
    masks = torch.zeros(2, batch, side, side, dtype=torch.bool)
    masks[:, ::2, 3:9, 2:10] = True  # about half the crops masked, as with pred_ratio [0, 0.3]

    def boxes(n: int, lo: float, hi: float) -> torch.Tensor:
        wh = lo + (hi - lo) * torch.rand(n, batch, 2, generator=gen, dtype=torch.float64)
        xy = (500 - wh) * torch.rand(n, batch, 2, generator=gen, dtype=torch.float64)
        flip = (torch.rand(n, batch, 1, generator=gen) < 0.5).double()
        return torch.cat((xy, wh, flip), dim=-1)

    return {
        "global_crops": torch.randn(2, batch, 3, 224, 224, generator=gen),
        "local_crops": torch.randn(local_crops, batch, 3, 96, 96, generator=gen),
        "masks": masks,
        "global_boxes": boxes(2, 200, 500),
        "local_boxes": boxes(local_crops, 60, 200),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_small_patch16_224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--local-crops", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    method = SereMethod(SereConfig(arch=args.arch))
    optimizer = torch.optim.AdamW(
        [
            {"params": g["params"], "weight_decay": 0.04 if g["weight_decay"] else 0.0}
            for g in method.param_groups()
        ],
        lr=1e-4,
    )
    patch = method.student.patch_size[0]
    batch = make_batch(args.batch, args.local_crops, patch, gen)
    times = []
    for step in range(args.steps + 1):
        info = StepInfo(
            step=step, epoch=1, steps_per_epoch=args.steps + 1, total_steps=args.steps + 1
        )
        start = time.perf_counter()
        terms = method(batch, info)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        # per-parameter clipping to 0.3 (docs/methods/sere.md §8 #12)
        for p in method.student.parameters():
            if p.grad is not None:
                norm = p.grad.norm()
                p.grad.mul_(torch.clamp(0.3 / (norm + 1e-6), max=1.0))
        method.after_backward(info)
        optimizer.step()
        method.update_teacher(0.996)
        elapsed = time.perf_counter() - start
        if step > 0:
            times.append(elapsed)
        warm = "  (warm-up)" if step == 0 else ""
        print(f"step {step}: {elapsed:.3f} s  loss {float(terms['loss'].detach()):.4f}{warm}")
    print(
        f"{args.arch} batch {args.batch} + {args.local_crops} local crops, {args.threads} threads: "
        f"median {statistics.median(times):.3f} s/step over {len(times)} steps"
    )


if __name__ == "__main__":
    main()
