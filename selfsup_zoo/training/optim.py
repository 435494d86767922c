"""Optimizers and per-iteration schedules.

Every schedule is a plain float64 numpy array indexed by the 0-based global optimizer iteration
(DINO/iBOT style): trivially resumable, plottable and testable against hand-computed values.

Two learning-rate shapes are needed, one per method, and they differ in details that matter for
fidelity:

* ``warmcos`` (CARE, ``docs/methods/care.md`` §5.1 and §9 #20): the optimizer is created at
  ``warmup_start_lr`` (1e-6) and the official loop sets the lr for iteration i+1 *after* iteration
  i (1-based), so the 0-based step s uses f(s) with f(0) = ``warmup_start_lr``, a linear ramp to
  the peak at s = W and a half cosine from the peak to 0 (``min_lr``) over the remaining T-W
  iterations (divisor T-W).
* ``cosine`` (iBOT/SERE ``cosine_scheduler``, ``docs/methods/sere.md`` §5.2): warm-up
  ``linspace(start, base, W)`` with both ends included, then
  ``final + ½(base-final)(1+cos(πk/(T-W)))`` for k = 0..T-W-1.

The weight-decay and EMA-momentum schedules of both methods are the same cosine without warm-up.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from selfsup_zoo.training.recipe import Recipe, linear_scaled_lr

logger = logging.getLogger(__name__)

__all__ = [
    "warmcos_schedule",
    "cosine_schedule",
    "momentum_schedule",
    "lr_schedule",
    "wd_schedule",
    "Schedules",
    "apply_schedules",
    "clip_gradients",
    "build_optimizer",
]


def warmcos_schedule(
    peak: float, total_steps: int, warmup_steps: int, warmup_start: float = 1e-6, final: float = 0.0
) -> np.ndarray:
    """CARE's ``warmcos``: value used at each 0-based iteration (length ``total_steps``)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    steps = np.arange(total_steps, dtype=np.float64)
    out = np.empty(total_steps, dtype=np.float64)
    if warmup_steps > 0:
        warm = steps <= warmup_steps
        out[warm] = (peak - warmup_start) * steps[warm] / warmup_steps + warmup_start
    else:
        warm = np.zeros(total_steps, dtype=bool)
    rest = ~warm
    span = max(total_steps - warmup_steps, 1)
    # The official ``warmcos`` decays to 0; ``final`` generalises it: final + (peak-final)·cos-term.
    out[rest] = final + (peak - final) * 0.5 * (
        1.0 + np.cos(math.pi * (steps[rest] - warmup_steps) / span)
    )
    return out


def cosine_schedule(
    base: float, final: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """iBOT/DINO ``cosine_scheduler`` over ``total_steps`` iterations."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if warmup_steps > total_steps:
        raise ValueError(f"warm-up ({warmup_steps}) longer than the run ({total_steps})")
    warm = np.linspace(warmup_start, base, warmup_steps) if warmup_steps > 0 else np.zeros(0)
    iters = np.arange(total_steps - warmup_steps, dtype=np.float64)
    cos = final + 0.5 * (base - final) * (1.0 + np.cos(math.pi * iters / max(len(iters), 1)))
    return np.concatenate([warm, cos]).astype(np.float64)


def momentum_schedule(base: float, total_steps: int) -> np.ndarray:
    """EMA momentum m(k) = 1 - (1-base)(cos(πk/K)+1)/2 for k = 0..K (length K+1).

    One array serves both methods: CARE applies m(k+1) after step k (its EMA runs at the start of
    step k+1 with m(k+1)), SERE applies m(k) after step k; the recipe's ``ema.index_offset`` says
    which. The extra final entry (m(K) = 1) makes CARE's last index valid.
    """
    k = np.arange(total_steps + 1, dtype=np.float64)
    return 1.0 - (1.0 - base) * (np.cos(math.pi * k / total_steps) + 1.0) / 2.0


def lr_schedule(
    optim_cfg: Any, global_batch: int, total_steps: int, steps_per_epoch: int
) -> np.ndarray:
    """The lr array for a recipe's ``optim`` table (peak = base_lr · global_batch / 256)."""
    peak = linear_scaled_lr(optim_cfg.base_lr, global_batch)
    warmup = int(round(optim_cfg.warmup_epochs * steps_per_epoch))
    if warmup > total_steps:
        raise ValueError(
            f"the lr warm-up ({optim_cfg.warmup_epochs:g} epochs, {warmup} steps) is longer than "
            f"the run ({total_steps} steps): lower optim.warmup_epochs (fine-tuning: "
            "--warmup-epochs) or train for more epochs"
        )
    if optim_cfg.lr_schedule == "warmcos":
        return warmcos_schedule(
            peak, total_steps, warmup, optim_cfg.warmup_start_lr, optim_cfg.min_lr
        )
    if optim_cfg.lr_schedule == "cosine":
        return cosine_schedule(
            peak, optim_cfg.min_lr, total_steps, warmup, optim_cfg.warmup_start_lr
        )
    if optim_cfg.lr_schedule == "constant":
        return np.full(total_steps, peak, dtype=np.float64)
    raise ValueError(f"unknown lr schedule {optim_cfg.lr_schedule!r}")


def wd_schedule(optim_cfg: Any, total_steps: int) -> np.ndarray:
    """Weight decay per iteration: cosine from ``weight_decay`` to ``weight_decay_end`` (no
    warm-up)."""
    end = (
        optim_cfg.weight_decay if optim_cfg.weight_decay_end is None else optim_cfg.weight_decay_end
    )
    return cosine_schedule(optim_cfg.weight_decay, end, total_steps)


@dataclass(frozen=True)
class Schedules:
    """A run's per-iteration values, indexed by the 0-based global step.

    ``lr`` and ``weight_decay`` have ``total_steps`` entries, ``momentum`` (the EMA teacher's)
    ``total_steps + 1``; the update after step ``k`` uses ``momentum[k + ema_offset]``.
    """

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    ema_offset: int

    @classmethod
    def for_recipe(cls, recipe: Recipe, total_steps: int, steps_per_epoch: int) -> Schedules:
        """The recipe's schedules over a run of ``total_steps`` iterations."""
        return cls(
            lr=lr_schedule(recipe.optim, recipe.engine.global_batch, total_steps, steps_per_epoch),
            weight_decay=wd_schedule(recipe.optim, total_steps),
            momentum=momentum_schedule(recipe.ema.momentum_base, total_steps),
            ema_offset=recipe.ema.index_offset,
        )

    def teacher_momentum(self, step: int) -> float:
        """EMA momentum for the teacher update after 0-based step ``step``."""
        return float(self.momentum[step + self.ema_offset])


def apply_schedules(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Set every group's lr (times its ``lr_scale``, 1 when absent: timm's convention for layer
    decay, also how a grid of linear heads gives each head its own lr), and its weight decay where
    the group decays (``apply_wd``)."""
    for g in optimizer.param_groups:
        scale = g.get("lr_scale")
        g["lr"] = lr if scale is None else lr * float(scale)
        g["weight_decay"] = weight_decay if g.get("apply_wd", True) else 0.0


@torch.no_grad()
def clip_gradients(params: Iterable[torch.nn.Parameter], clip: float, mode: str) -> float | None:
    """Clip gradients in place; returns the global norm before clipping when it is computed.

    ``per_param`` is iBOT/SERE's rule (``docs/methods/sere.md`` §5.4): each gradient tensor with
    norm n is scaled by clip/(n+1e-6) when that factor is below 1 — not a global-norm clip.
    """
    if mode == "none" or clip <= 0:
        return None
    with_grad = [p for p in params if p.grad is not None]
    grads = [p.grad for p in with_grad if p.grad is not None]
    if not grads:
        return None
    if mode == "global":
        return float(torch.nn.utils.clip_grad_norm_(with_grad, clip))
    if mode == "per_param":
        for g in grads:
            factor = clip / (g.norm(2) + 1e-6)
            # torch.where keeps this sync-free on accelerators (no .item() per tensor).
            g.mul_(torch.where(factor < 1, factor, 1.0))
        return None
    raise ValueError(f"unknown clip mode {mode!r}")


def build_optimizer(
    param_groups: list[dict[str, Any]], optim_cfg: Any, device: torch.device
) -> torch.optim.Optimizer:
    """Create the recipe's optimizer over a method's groups; lr and wd are set per step later.

    Groups keep their ``weight_decay`` flag under the key ``apply_wd`` so that the engine knows
    which groups follow the weight-decay schedule and which stay at 0; a group's optional
    ``lr_scale`` (a float) multiplies the scheduled lr for that group (:func:`apply_schedules`).
    """
    groups = []
    for i, g in enumerate(param_groups):
        params = [p for p in g["params"] if p.requires_grad]
        if not params:
            continue
        apply_wd = bool(g.get("weight_decay", True))
        group: dict[str, Any] = {
            "params": params,
            "name": str(g.get("name", f"group{i}")),
            "apply_wd": apply_wd,
            "weight_decay": optim_cfg.weight_decay if apply_wd else 0.0,
            "lr": optim_cfg.warmup_start_lr,
        }
        if "lr_scale" in g:
            group["lr_scale"] = float(g["lr_scale"])
        groups.append(group)
    kwargs: dict[str, Any] = {}
    # fused kernels exist for CUDA only (here); foreach is a safe speed-up everywhere.
    impl = optim_cfg.impl
    if impl == "fused" and device.type == "cuda":
        kwargs["fused"] = True
    elif impl in ("foreach", "fused"):
        kwargs["foreach"] = True
    elif impl == "for_loop":
        kwargs["foreach"] = False
    if optim_cfg.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=optim_cfg.warmup_start_lr,
            momentum=optim_cfg.momentum,
            dampening=0.0,
            nesterov=optim_cfg.nesterov,
            **kwargs,
        )
    if optim_cfg.name == "adamw":
        return torch.optim.AdamW(
            groups,
            lr=optim_cfg.warmup_start_lr,
            betas=tuple(optim_cfg.betas),
            eps=optim_cfg.eps,
            **kwargs,
        )
    raise ValueError(f"unknown optimizer {optim_cfg.name!r} (valid: sgd, adamw)")
