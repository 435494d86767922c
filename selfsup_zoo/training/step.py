"""One optimizer step of a run: forward and backward over the micro-batches, then the update.

In order: set the step's lr and weight decay; for each micro-batch forward (under the recipe's
precision) and backward of ``loss / accum`` (DDP synchronises gradients on the last one only);
average the loss terms over processes and stop on a non-finite one (before the optimizer has
changed anything); unscale (fp16), clip, ``method.after_backward``, optimizer step; the EMA teacher
update with the step's momentum.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from selfsup_zoo.training import dist as tdist
from selfsup_zoo.training.loader import MicroBatch
from selfsup_zoo.training.methods import StepInfo
from selfsup_zoo.training.optim import apply_schedules, clip_gradients
from selfsup_zoo.training.state import TrainState

__all__ = ["NonFiniteLossError", "StepMetrics", "train_step", "precision_context"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without writing a checkpoint."""


@dataclass(frozen=True)
class StepMetrics:
    """What one step measured, averaged over processes and micro-batches.

    ``step`` counts the steps done including this one (1-based); ``losses`` holds every term the
    method returned (``loss`` is the optimised total); ``num_replaced`` counts unreadable images
    replaced in this step over all processes, ``num_replaced_total`` over the whole run;
    ``stop_requested`` is True on every process when any process asked to stop (a stop signal,
    ``selfsup_zoo.training.preemption``) before this step's all-reduce.
    """

    step: int
    epoch: float
    lr: float
    weight_decay: float
    momentum: float
    losses: dict[str, float]
    num_replaced: int
    num_replaced_total: int
    stop_requested: bool = False


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for ``bf16``/``fp16`` on ``device``; nothing for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _forward_backward(
    state: TrainState, micro_batches: Iterable[MicroBatch], info: StepInfo
) -> tuple[dict[str, torch.Tensor], int]:
    """Accumulate the gradients of ``loss / accum`` over the micro-batches.

    Returns:
        Each loss term averaged over the micro-batches (0-d fp32 tensors on the device), and the
        number of images this process replaced.
    """
    accum, distributed = state.accum, state.dist.distributed
    model = state.model
    sums: dict[str, torch.Tensor] = {}
    replaced = 0
    seen = 0
    for a, batch in enumerate(micro_batches):
        replaced += int(batch.pop("num_replaced", 0))
        sync = a == accum - 1 or not distributed
        # DDP's no_sync skips the gradient all-reduce of all but the last micro-batch. ``model`` is
        # typed nn.Module, whose __getattr__ mypy sees as returning a Tensor | Module.
        no_sync = contextlib.nullcontext() if sync else model.no_sync()  # type: ignore[operator]
        with no_sync:
            with precision_context(state.recipe.engine.precision, state.dist.device):
                terms = model(batch, info)
            loss = terms["loss"].float() / accum
            (state.scaler.scale(loss) if state.scaler is not None else loss).backward()
        for k, v in terms.items():
            v = v.detach().float().reshape(())
            sums[k] = sums[k] + v / accum if k in sums else v / accum
        seen += 1
    if seen != accum:
        raise RuntimeError(f"step {info.step}: the loader gave {seen} micro-batches, not {accum}")
    return sums, replaced


def _mean_over_processes(
    state: TrainState, sums: dict[str, torch.Tensor], replaced: int, stop: bool
) -> tuple[dict[str, float], int, bool]:
    """One all-reduce for the loss terms, the replaced-image count and the stop request.

    The stop request rides along in the same tensor (no extra collective): every process learns
    in the same step that one of them was asked to stop. Appending entries changes no other sum.

    Returns:
        The loss terms averaged over processes, the replaced images summed over them, and whether
        any process requested a stop.
    """
    keys = list(sums)
    device = state.dist.device
    extra = torch.tensor([float(replaced), 1.0 if stop else 0.0], device=device)
    packed = torch.cat([torch.stack([sums[k] for k in keys]), extra])
    packed = tdist.all_mean(packed, state.dist).cpu()
    values = {k: float(packed[i]) for i, k in enumerate(keys)}
    replaced_all = int(round(float(packed[-2]) * state.dist.world_size))
    return values, replaced_all, float(packed[-1]) > 0.0


def _optimizer_step(state: TrainState, info: StepInfo) -> None:
    scaler, optimizer, opt_cfg = state.scaler, state.optimizer, state.recipe.optim
    if scaler is not None:
        scaler.unscale_(optimizer)
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    clip_gradients(trainable, opt_cfg.clip_grad, opt_cfg.clip_mode)
    state.method.after_backward(info)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _non_finite_message(state: TrainState, values: dict[str, float]) -> str:
    recipe, last = state.recipe, state.last_checkpoint
    terms = ", ".join(f"{k}={v:.6g}" for k, v in values.items())
    hints = []
    if recipe.engine.precision == "fp16":
        hints.append("switch engine.precision to bf16 or fp32 (fp16 overflows more easily)")
    hints.append(f"lower the learning rate (optim.base_lr = {recipe.optim.base_lr:g})")
    if recipe.optim.clip_mode == "none":
        hints.append("enable gradient clipping (optim.clip_mode, optim.clip_grad)")
    where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    return (
        f"non-finite loss at step {state.step} (epoch {state.epoch}): {terms}. The run stopped "
        f"before the optimizer step; {where} (resume with --resume auto). Try: "
        + "; ".join(hints)
        + "."
    )


def train_step(
    state: TrainState,
    micro_batches: Iterable[MicroBatch],
    step: int,
    stop_requested: Callable[[], bool] | None = None,
) -> StepMetrics:
    """Run global step ``step`` (0-based) on this process and advance ``state`` by one step.

    Args:
        state: the run's state; its ``step`` must be ``step``.
        micro_batches: this process's ``state.accum`` micro-batches of the step, on the device
            (read one at a time).
        step: the global step.
        stop_requested: read after the backward pass on this process (e.g.
            ``PreemptionWatch.requested``); the result's ``stop_requested`` is its OR over
            processes. None = never.

    Returns:
        The step's metrics (the same on every process).

    Raises:
        NonFiniteLossError: a loss term is NaN or infinite; the optimizer, the teacher and
            ``state`` are left as they were before the step (gradients cleared).
    """
    if state.step != step:
        raise RuntimeError(f"train_step({step}) on a state at step {state.step}")
    info = StepInfo(
        step=step,
        epoch=state.epoch,
        steps_per_epoch=state.steps_per_epoch,
        total_steps=state.total_steps,
    )
    lr = float(state.schedules.lr[step])
    weight_decay = float(state.schedules.weight_decay[step])
    apply_schedules(state.optimizer, lr, weight_decay)
    sums, replaced = _forward_backward(state, micro_batches, info)
    stop = stop_requested() if stop_requested is not None else False
    values, replaced_all, stop_all = _mean_over_processes(state, sums, replaced, stop)
    if not all(math.isfinite(v) for v in values.values()):
        state.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(_non_finite_message(state, values))
    _optimizer_step(state, info)
    momentum = state.schedules.teacher_momentum(step)
    state.method.update_teacher(momentum)
    state.step += 1
    state.num_replaced += replaced_all
    return StepMetrics(
        step=state.step,
        epoch=state.step / state.steps_per_epoch,
        lr=lr,
        weight_decay=weight_decay,
        momentum=momentum,
        losses=values,
        num_replaced=replaced_all,
        num_replaced_total=state.num_replaced,
        stop_requested=stop_all,
    )
