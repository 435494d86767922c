"""Our CARE and SERE training steps, as the engine runs them, on random inputs of recipe shapes.

CARE: EMA update + forward (two student, two teacher calls) + backward + SGD (momentum 0.9, weight
decay 1e-4). SERE: forward + backward + per-parameter clipping to 0.3 + last-layer hook + AdamW +
EMA update. ``batch`` is images per view.

Settings: ``official`` is fp32 in the default memory format (the official code's precision on
CPU; on GPU fp16 autocast as the official recipes run). ``best`` is our fastest option on the
device: channels_last on CPU (this AVX2 CPU has no bf16 hardware, so bf16 autocast is slower), bf16
autocast + channels_last on GPU.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from selfsup_zoo.training.methods.base import StepInfo
from selfsup_zoo.training.methods.care import CareConfig, CareMethod
from selfsup_zoo.training.methods.sere import SereConfig, SereMethod
from selfsup_zoo.training.state import data_parallel, synchronise_batchnorm

from .timing import Prepared, count_flops

__all__ = ["StepShape", "care_shape", "sere_shape", "prepare_care", "prepare_sere", "sere_batch"]


@dataclass(frozen=True)
class StepShape:
    """Sizes of one benchmarked step."""

    batch: int
    size: int  # CARE view side / SERE global crop side
    local_size: int = 96
    local_crops: int = 10


def care_shape(quick: bool, gpu: bool) -> StepShape:
    """CARE: batch 8 x 2 views at 224 px (128 on GPU, the recipe's per-GPU batch)."""
    return StepShape(batch=2, size=32) if quick else StepShape(batch=128 if gpu else 8, size=224)


def sere_shape(quick: bool, gpu: bool) -> StepShape:
    """SERE: batch 8, 2 x 224 + 10 x 96 (128 on GPU)."""
    if quick:
        return StepShape(batch=2, size=64, local_size=32, local_crops=2)
    return StepShape(batch=128 if gpu else 8, size=224)


def precision(setting: str, device: str) -> AbstractContextManager[object]:
    """Autocast of a setting: none on CPU; fp16 (official) or bf16 (best) on GPU."""
    if not device.startswith("cuda"):
        return nullcontext()
    dtype = torch.float16 if setting == "official" else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


def _model(method: CareMethod | SereMethod, device: str, distributed: bool) -> torch.nn.Module:
    """The method itself, or (``distributed``: a process group is initialised) the method with
    SyncBatchNorm in DDP, as the engine sets up a multi-process run."""
    if not distributed:
        return method
    synchronise_batchnorm(method, torch.device(device))
    return data_parallel(method, torch.device(device))


def prepare_care(setting: str, device: str, quick: bool, distributed: bool = False) -> Prepared:
    """Our CARE step (ResNet-50 + T-stream) ready to time.

    Args:
        setting: ``official`` or ``best`` (see the module docstring).
        device: ``cpu`` or ``cuda``.
        quick: Tiny sizes (:meth:`CareConfig.smoke`) for an end-to-end test of the runner.
        distributed: The step of one process of a multi-process run (SyncBatchNorm, DDP); the
            caller has initialised the process group.

    Returns:
        One call = one optimiser step on ``2 x batch`` view-images; ``items`` counts images.
    """
    shape = care_shape(quick, device.startswith("cuda"))
    torch.manual_seed(0)
    cfg = CareConfig.smoke() if quick else CareConfig(arch="resnet50", img_size=shape.size)
    cfg.img_size = shape.size
    method = CareMethod(cfg).train().to(device)
    fmt = torch.channels_last if setting == "best" else torch.contiguous_format
    method = method.to(memory_format=fmt)
    model = _model(method, device, distributed)
    params = method.param_groups()[0]["params"]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)
    batch = {
        k: torch.randn(shape.batch, 3, shape.size, shape.size, device=device).to(memory_format=fmt)
        for k in ("x1", "x2")
    }
    counter = [0]

    def step() -> None:
        n = counter[0]
        counter[0] += 1
        info = StepInfo(step=n, epoch=0, steps_per_epoch=1000, total_steps=1000)
        momentum = 1 - (1 - 0.99) * (math.cos(math.pi * n / 1000) + 1) / 2
        method.update_teacher(momentum)
        with precision(setting, device):
            terms = model(batch, info)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()

    return Prepared(step, shape.batch, lambda: count_flops(step), device, model)


def sere_batch(shape: StepShape, patch: int, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random batch in the layout the SERE data pipeline produces (crops, masks, boxes).

    Args:
        shape: Batch and crop sizes.
        patch: ViT patch size (sets the mask side).
        device: Where the crops go (boxes and masks too, as the collate hands them over).
        seed: Generator seed.

    Returns:
        ``global_crops [2, B, 3, S, S]``, ``local_crops [L, B, 3, s, s]``, ``masks [2, B, G, G]``
        and ``global_boxes [2, B, 5]`` / ``local_boxes [L, B, 5]`` (x, y, w, h, flip; float64).
    """
    gen = torch.Generator().manual_seed(seed)
    b, side = shape.batch, shape.size // patch
    masks = torch.zeros(2, b, side, side, dtype=torch.bool)
    masks[:, ::2, side // 4 : side // 2 + 1, side // 7 : side * 5 // 7] = True  # half masked

    def boxes(n: int, lo: float, hi: float) -> torch.Tensor:
        wh = lo + (hi - lo) * torch.rand(n, b, 2, generator=gen, dtype=torch.float64)
        xy = (500 - wh) * torch.rand(n, b, 2, generator=gen, dtype=torch.float64)
        flip = (torch.rand(n, b, 1, generator=gen) < 0.5).double()
        return torch.cat((xy, wh, flip), dim=-1)

    batch = {
        "global_crops": torch.randn(2, b, 3, shape.size, shape.size, generator=gen),
        "local_crops": torch.randn(
            shape.local_crops, b, 3, shape.local_size, shape.local_size, generator=gen
        ),
        "masks": masks,
        "global_boxes": boxes(2, 200, 500),
        "local_boxes": boxes(shape.local_crops, 60, 200),
    }
    return {k: v.to(device) for k, v in batch.items()}


def sere_config(arch: str, quick: bool, shape: StepShape) -> SereConfig:
    """The recipe's ViT-S/16 config, or a one-block narrow ViT for ``quick``."""
    if not quick:
        return SereConfig(arch=arch)
    return SereConfig(
        arch=arch,
        model_args={"depth": 1, "embed_dim": 64, "num_heads": 2, "img_size": shape.size},
        out_dim=128,
        patch_out_dim=128,
        head_hidden_dim=64,
        head_bottleneck_dim=16,
        overlap_size=4,
    )


def prepare_sere(
    setting: str,
    device: str,
    quick: bool,
    arch: str = "vit_small_patch16_224",
    distributed: bool = False,
) -> Prepared:
    """Our SERE step (ViT-S/16, drop path 0.1) ready to time.

    Args:
        setting: ``official`` or ``best``.
        device: ``cpu`` or ``cuda``.
        quick: Tiny sizes for an end-to-end test of the runner.
        arch: timm ViT architecture.
        distributed: As for :func:`prepare_care`.

    Returns:
        One call = one optimiser step on ``batch`` images (2 global + L local crops each).
    """
    shape = sere_shape(quick, device.startswith("cuda"))
    torch.manual_seed(0)
    method = SereMethod(sere_config(arch, quick, shape)).to(device)
    model = _model(method, device, distributed)
    optimizer = torch.optim.AdamW(
        [
            {"params": g["params"], "weight_decay": 0.04 if g["weight_decay"] else 0.0}
            for g in method.param_groups()
        ],
        lr=1e-4,
    )
    batch = sere_batch(shape, method.student.patch_size[0], device)
    counter = [0]

    def step() -> None:
        n = counter[0]
        counter[0] += 1
        info = StepInfo(step=n, epoch=1, steps_per_epoch=1000, total_steps=1000)
        with precision(setting, device):
            terms = model(batch, info)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        for p in method.student.parameters():  # per-parameter clipping to 0.3
            if p.grad is not None:
                p.grad.mul_(torch.clamp(0.3 / (p.grad.norm() + 1e-6), max=1.0))
        method.after_backward(info)
        optimizer.step()
        method.update_teacher(0.996)

    return Prepared(step, shape.batch, lambda: count_flops(step), device, model)
