"""Zoo backbones: ``create_model(pretrained=True)`` from a local file vs a random-init build, and
inference throughput in fp32, bf16 autocast and channels_last."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file

import selfsup_zoo.models  # noqa: F401  (registers the zoo's architectures with timm)
from selfsup_zoo import catalog

from .timing import Prepared

__all__ = ["architectures", "weights_file", "prepare_load", "prepare_inference"]


def architectures(quick: bool) -> list[str]:
    """Every zoo architecture (``quick``: ResNet-50 only)."""
    return ["care_resnet50"] if quick else catalog.architectures()


def weights_file(root: Path, arch: str) -> Path:
    """A safetensors file of a random ``arch`` in the catalog layout (written once).

    Args:
        root: The runner's temporary folder.
        arch: Zoo architecture.

    Returns:
        ``root/weights/<arch>.safetensors``.
    """
    path = root / "weights" / f"{arch}.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in timm.create_model(arch).state_dict().items()}
        save_file(state, str(path))
    return path


def prepare_load(root: Path, arch: str, setting: str) -> Prepared:
    """One call builds ``arch``: ``random_init`` or ``pretrained`` (from :func:`weights_file`)."""
    torch.set_num_threads(1)
    path = weights_file(root, arch)

    def call() -> None:
        if setting == "pretrained":
            timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        else:
            timm.create_model(arch)

    return Prepared(call, 1)


def prepare_inference(arch: str, setting: str, device: str, quick: bool) -> Prepared:
    """Eval-mode forward of a batch (8 on CPU, 128 on GPU; ``quick``: 1 image at 64 px).

    Args:
        arch: Zoo architecture.
        setting: ``fp32``, ``bf16`` (autocast) or ``channels_last`` (fp32).
        device: ``cpu`` or ``cuda``.
        quick: Tiny input.

    Returns:
        One call = one batch under ``torch.inference_mode``.
    """
    kwargs: dict[str, Any] = {"img_size": 64} if quick and "vit" in arch else {}
    model = timm.create_model(arch, **kwargs).eval().to(device)
    batch = 1 if quick else (128 if device.startswith("cuda") else 8)
    side = 64 if quick else 224
    x = torch.randn(batch, 3, side, side, device=device)
    if setting == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    autocast = (
        torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
        if setting == "bf16"
        else nullcontext()
    )

    def call() -> None:
        with torch.inference_mode(), autocast:
            model(x)

    return Prepared(call, batch, device=device)
