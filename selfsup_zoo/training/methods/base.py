"""The small interface through which a self-supervised method plugs into the training engine.

The engine (``selfsup_zoo.training.engine``) owns processes, devices, data loading, precision,
the optimizer, schedules, checkpoints and logging. A method owns its networks and its losses and
knows nothing about files, processes or logging. One training iteration, as the engine runs it::

    info = StepInfo(step, epoch, steps_per_epoch, total_steps)
    terms = method(batch, info)                 # dict of loss terms; terms["loss"] is optimised
    scaler.scale(terms["loss"]).backward()      # (accumulated over micro-batches when asked)
    scaler.unscale_(optimizer); clip (recipe); method.after_backward(info)
    scaler.step(optimizer); scaler.update()
    method.update_teacher(momentum[step + k])   # EMA teacher, k = recipe ema.index_offset

``batch`` is the collated output of the method's views (see ``selfsup_zoo.training.data``), with
every image tensor already on the device, converted from uint8 to float32 and normalised.

A method needs no process group of its own: a statistic over the whole global batch (the iBOT
centre) goes through ``method.collectives`` (a ``selfsup_zoo.training.collectives.Collectives``),
which the engine sets once the process group is up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from selfsup_zoo.training.collectives import Collectives, default_collectives


@dataclass(frozen=True)
class StepInfo:
    """Where the run is: ``step`` is the 0-based global optimizer iteration."""

    step: int
    epoch: int
    steps_per_epoch: int
    total_steps: int


class ConfigDict:
    """JSON round trip for a method's config dataclass (``[method]`` of a recipe, the ``args`` of an
    official checkpoint)."""

    def to_dict(self) -> dict[str, Any]:
        # ConfigDict is only mixed into dataclasses, which mypy cannot see from the mixin.
        data: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
        return cls(**dict(data))


class Method(nn.Module):
    """Base class of a pre-training method (CARE, SERE).

    Subclasses implement every method below except :meth:`update_teacher`, which is shared: they say
    which tensors the EMA pairs in :meth:`ema_pairs`. ``param_groups`` returns optimizer groups as
    dicts with ``params`` and ``weight_decay`` (a bool: whether the recipe's weight decay, and its
    schedule, applies to that group) and optional ``name``.

    ``collectives`` is how a method reduces over processes; the engine sets it after the process
    group is initialised (``method.collectives = default_collectives()``). Until something sets
    it, every read resolves :func:`~selfsup_zoo.training.collectives.default_collectives`: the
    process group's collectives under torchrun, the single-process ones otherwise, so a method
    built by hand (tests, notebooks) needs no process group.
    """

    name: str = ""
    #: Set through :attr:`collectives`; ``None`` = resolve the default at each read.
    _collectives: Collectives | None = None

    @property
    def collectives(self) -> Collectives:
        """The collectives the engine set, else those of the current process group (if any)."""
        if self._collectives is None:
            return default_collectives()
        return self._collectives

    @collectives.setter
    def collectives(self, value: Collectives) -> None:
        self._collectives = value

    def forward(self, batch: dict[str, Any], info: StepInfo) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def after_backward(self, info: StepInfo) -> None:
        """Hook after gradients are unscaled and clipped, before the optimizer step."""

    def ema_pairs(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, teacher tensor, student tensor) for every tensor the teacher EMA updates."""
        raise NotImplementedError

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """t <- m * t + (1 - m) * s over :meth:`ema_pairs`, with the official operation order of
        BYOL/CARE and DINO/iBOT, ``t.mul_(m).add_((1 - m) * s)``: two products, then the sum (a
        fused multiply-add rounds differently, and the CARE golden case is ill-conditioned enough
        to show last-bit differences in the teacher)."""
        m = float(momentum)
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1], got {m}")
        pairs = self.ema_pairs()
        if not pairs:
            return
        teacher = [t for _, t, _ in pairs]
        student = [s.detach() for _, _, s in pairs]
        torch._foreach_mul_(teacher, m)
        torch._foreach_add_(teacher, torch._foreach_mul(student, 1.0 - m))

    def convert_sync_batchnorm(self) -> None:
        """Turn the BatchNorms that the official run synchronised into SyncBatchNorm (DDP only)."""
        raise NotImplementedError

    def export_backbone(self) -> nn.Module:
        """The timm backbone whose weights are the released checkpoint (timm, num_classes=0)."""
        raise NotImplementedError
