"""The machine's reference FLOP rate: one large dense matmul, timed like every other case.

A training step's utilisation is its FLOPs (from :class:`torch.utils.flop_counter.FlopCounterMode`:
convolutions and matmuls, forward and backward) per second over a peak. On a GPU the peak is the
datasheet's dense bf16 figure (:func:`benchmarks.report.peak_flops`). A CPU has no such figure
that its BLAS reaches, so the runner measures one in the same run: case ``peak:matmul``, a square
fp32 matmul large enough that the BLAS runs at its best, with the step cases' threads. A step near
100 % of it runs its FLOPs as fast as this machine's fp32 GEMM can; no implementation of the same
FLOPs in the same precision can then be much faster (docs/training.md §8.3).
"""

from __future__ import annotations

import torch

from .timing import Prepared

__all__ = ["prepare_matmul"]


def prepare_matmul(device: str, quick: bool) -> Prepared:
    """``a @ b`` of two ``n x n`` matrices: fp32 on the CPU (n = 2048), bf16 on a GPU (n = 8192).

    Args:
        device: ``cpu`` or ``cuda``.
        quick: n = 256 (a test of the machinery).

    Returns:
        One call = one matmul; ``items`` is 1 and ``flops`` gives its ``2 n^3``.
    """
    gpu = device.startswith("cuda")
    n = 256 if quick else (8192 if gpu else 2048)
    dtype = torch.bfloat16 if gpu else torch.float32
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator).to(device, dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)

    def call() -> None:
        torch.matmul(a, b, out=out)

    return Prepared(call, 1, lambda: 2 * n**3, device)
