"""GPU check item (b): the ImageNet-size CARE and SERE training steps at each precision.

CARE: ResNet-50 + T-stream, 2 views at 224 px; SERE: ViT-S/16, 2 x 224 + 10 x 96 crops (the
benchmark runner's shapes, :mod:`benchmarks.steps`; ``quick`` shrinks them). The model is built
once on the CPU (seed 0); the reference is a CPU fp32 forward of step 0 on the smallest batch, and
every device run starts from a copy of the same weights on the same batch. Each run does a few
optimiser steps (SGD for CARE, AdamW + per-parameter clipping for SERE, fp16 through a GradScaler)
and reports the losses, the median step time and the peak memory.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
from contextlib import AbstractContextManager, nullcontext

import torch

from selfsup_zoo.training.methods.base import StepInfo
from selfsup_zoo.training.methods.care import CareConfig, CareMethod
from selfsup_zoo.training.methods.sere import SereMethod

from .gpu_check_table import Row, compare
from .steps import StepShape, care_shape, sere_batch, sere_config, sere_shape

__all__ = ["step_rows", "PRECISIONS"]

Method = CareMethod | SereMethod

# Per-device batches tried after the reference batch; a batch that does not fit is skipped.
GPU_BATCHES = (32, 64, 128)
_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def PRECISIONS(device: str) -> tuple[str, ...]:  # noqa: N802 - reads as the constant it stands for
    """Precisions of the device: fp16 (GradScaler) is a CUDA path."""
    return ("fp32", "bf16", "fp16") if device.startswith("cuda") else ("fp32", "bf16")


def _autocast(precision: str, device: str) -> AbstractContextManager[object]:
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPE[precision])


def _tiny_care(size: int) -> CareConfig:
    """The smoke recipe's CARE network (a ResNet-18 with one block per stage, a narrow T-stream)."""
    return CareConfig(
        arch="resnet18",
        model_args={"layers": [1, 1, 1, 1]},
        img_size=size,
        tstream_dim_out=64,
        tstream_layers=1,
        tstream_heads=2,
        tstream_dim_head=16,
        hidden_dim=64,
        out_dim=16,
    )


def _build(kind: str, quick: bool) -> Method:
    """The method, built on the CPU with seed 0."""
    torch.manual_seed(0)
    if kind == "care":
        shape = care_shape(quick, gpu=False)
        cfg = _tiny_care(shape.size) if quick else CareConfig(arch="resnet50", img_size=shape.size)
        return CareMethod(cfg).train()
    shape = sere_shape(quick, gpu=False)
    # drop path draws on the device's RNG: off, so that CPU and GPU see the same network
    sere = dataclasses.replace(sere_config("vit_small_patch16_224", quick, shape), drop_path=0.0)
    return SereMethod(sere).train()


def _batch(kind: str, shape: StepShape, method: Method, device: str) -> dict[str, torch.Tensor]:
    if kind == "sere":
        assert isinstance(method, SereMethod)
        return sere_batch(shape, method.student.patch_size[0], device)
    gen = torch.Generator().manual_seed(0)
    views = {k: torch.randn(shape.batch, 3, shape.size, shape.size, generator=gen) for k in "12"}
    return {f"x{k}": v.to(device) for k, v in views.items()}


def _optimizer(kind: str, method: Method) -> torch.optim.Optimizer:
    groups = method.param_groups()
    if kind == "care":
        return torch.optim.SGD(groups[0]["params"], lr=0.05, momentum=0.9, weight_decay=1e-4)
    return torch.optim.AdamW(
        [
            {"params": g["params"], "weight_decay": 0.04 if g["weight_decay"] else 0.0}
            for g in groups
        ],
        lr=1e-4,
    )


def _forward(kind: str, method: Method, batch: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    info = StepInfo(step=n, epoch=1, steps_per_epoch=1000, total_steps=1000)
    if kind == "care":
        momentum = 1 - (1 - 0.99) * (math.cos(math.pi * n / 1000) + 1) / 2
        assert isinstance(method, CareMethod)
        method.update_teacher(momentum)
    loss: torch.Tensor = method(batch, info)["loss"]
    return loss


def _steps(
    kind: str, base: Method, shape: StepShape, precision: str, device: str, steps: int
) -> tuple[list[float], float, float]:
    """Train a copy of ``base`` for ``steps`` steps: (losses, median seconds per step, peak GiB)."""
    method = copy.deepcopy(base).to(device)
    optimizer = _optimizer(kind, method)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    batch = _batch(kind, shape, method, device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    losses, times = [], []
    for n in range(steps):
        start = time.perf_counter()
        with _autocast(precision, device):
            loss = _forward(kind, method, batch, n)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if isinstance(method, SereMethod):  # per-parameter clipping to 0.3
            for p in method.student.parameters():
                if p.grad is not None:
                    p.grad.mul_(torch.clamp(0.3 / (p.grad.norm() + 1e-6), max=1.0))
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if isinstance(method, SereMethod):
            method.update_teacher(0.996)
        losses.append(float(loss.detach()))  # synchronises the device
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    del method, optimizer, batch
    if cuda:
        torch.cuda.empty_cache()
    return losses, statistics.median(times[1:] or times), peak


def _reference(kind: str, base: Method, shape: StepShape) -> float:
    """CPU fp32 loss of step 0 (forward only) on a copy of ``base``."""
    method = copy.deepcopy(base)
    with torch.no_grad():
        return float(_forward(kind, method, _batch(kind, shape, method, "cpu"), 0))


def step_rows(device: str, quick: bool, steps: int = 3) -> list[Row]:
    """Rows of item (b): both methods at each precision and batch.

    Args:
        device: ``cuda`` or ``cpu``.
        quick: tiny models and sizes (CPU tests).
        steps: optimiser steps per run.

    Returns:
        One row per method, precision and batch; the reference batch's rows compare the first loss
        with the CPU fp32 reference, larger batches only check that the losses stay finite.
    """
    rows: list[Row] = []
    for kind in ("care", "sere"):
        try:
            base = _build(kind, quick)
            full = care_shape(quick, gpu=False) if kind == "care" else sere_shape(quick, gpu=False)
            batches = (full.batch,) if quick else GPU_BATCHES
            if not device.startswith("cuda"):
                batches = batches[:1]
            shapes = [dataclasses.replace(full, batch=b) for b in batches]
            start = time.perf_counter()
            ref = _reference(kind, base, shapes[0])
            print(
                f"{kind} cpu fp32 reference loss (batch {shapes[0].batch}): {ref:.6f} "
                f"({time.perf_counter() - start:.1f} s)",
                flush=True,
            )
        except Exception as err:  # noqa: BLE001 - this method's rows fail, the other still runs
            rows.append(
                Row(f"{kind} step reference", "FAIL", note=f"{type(err).__name__}: {err}"[:200])
            )
            continue
        for precision in PRECISIONS(device):
            for shape in shapes:
                item = f"{kind} step {precision} b{shape.batch}"
                rows.append(_one(kind, base, shape, precision, device, steps, item, ref, shapes[0]))
                print(f"  {item}: {rows[-1].status} {rows[-1].note}", flush=True)
                if rows[-1].status == "skip":
                    break  # a larger batch will not fit either
    return rows


def _one(
    kind: str,
    base: Method,
    shape: StepShape,
    precision: str,
    device: str,
    steps: int,
    item: str,
    ref: float,
    ref_shape: StepShape,
) -> Row:
    try:
        losses, step_s, peak = _steps(kind, base, shape, precision, device, steps)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return Row(item, "skip", note="out of memory at this batch")
    except Exception as err:  # noqa: BLE001 - one failing run is one FAIL row
        return Row(item, "FAIL", note=f"{type(err).__name__}: {str(err).splitlines()[0][:160]}")
    note = f"losses {', '.join(f'{x:.5f}' for x in losses)}; {step_s * 1000:.0f} ms/step"
    if math.isfinite(peak):
        note += f"; peak {peak:.1f} GiB"
    finite = all(math.isfinite(x) for x in losses)
    if shape == ref_shape:
        row = compare(item, precision, losses[0], ref, note)
        if not finite:
            row.status = "FAIL"
        return row
    return Row(item, "pass" if finite else "FAIL", losses[0], None, None, note)
