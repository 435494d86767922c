"""The training engine: one loop for every method, composed of named steps.

It owns processes (``torchrun``: NCCL on GPUs, gloo on CPUs), devices, data loading, precision,
the optimizer and its per-iteration schedules, the EMA teacher cadence, checkpoints, exact resume,
logging, progress and the final export. It knows nothing about CARE or SERE: a method plugs in
through ``selfsup_zoo.training.methods.base.Method``. The parts live in their own modules:
``loader`` (data, sampler position), ``state`` (:class:`TrainState`), ``step`` (:func:`train_step`),
``checkpoint`` (files), ``run_logger`` (log.jsonl, TensorBoard, progress), ``provenance`` and
``export``.

Invariants the design rests on
------------------------------
* **Same samples per global step whatever the world size.** :class:`StepSampler` draws one seeded
  permutation of the dataset per epoch; global step ``s`` uses the slice ``[s·G, (s+1)·G)`` and rank
  ``r`` takes its contiguous share of it, cut into ``accum`` micro-batches. With the data module's
  per-sample seeding (views depend on (seed, epoch, index) only) a run on 1 CPU and a run on 8 GPUs
  see the same images with the same augmentations at every step.
* **Exact resume.** A checkpoint holds the method's whole state (student, teacher, buffers), the
  optimizer, the GradScaler, the step, every rank's RNG states and the wall time; the sampler starts
  mid-epoch from the step. The schedules are arrays indexed by the global step. So an interrupted
  CPU run resumes to bit-identical weights.
* **Checkpoints load with ``torch.load(weights_only=True)``**: plain dicts of tensors, numbers,
  strings and lists; the recipe is stored as a JSON string. They are written to a temporary file,
  fsynced and renamed, so a crash never leaves a half-written file under the final name; a damaged
  file is still detected on load (and ``resume="auto"`` falls back to the previous one).
* **A non-finite loss stops the run** before the optimizer step and before any checkpoint is
  written, so the last checkpoint on disk is the last good state.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selfsup_zoo._io import atomic_write_text
from selfsup_zoo.training import dist as tdist
from selfsup_zoo.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    checkpoint_path,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    remove_stale_temp_files,
    save_checkpoint,
)
from selfsup_zoo.training.data import default_cache_dir
from selfsup_zoo.training.epoch_hooks import EpochHook, hook_due, run_epoch_hook
from selfsup_zoo.training.export import export_method
from selfsup_zoo.training.loader import build_train_data, iterate_steps
from selfsup_zoo.training.provenance import export_provenance, git_commit
from selfsup_zoo.training.recipe import Recipe
from selfsup_zoo.training.rng import seed_everything
from selfsup_zoo.training.run_logger import RunLogger
from selfsup_zoo.training.sampler import StepSampler
from selfsup_zoo.training.state import TrainState, method_table
from selfsup_zoo.training.step import NonFiniteLossError, train_step

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "NonFiniteLossError",
    "RunResult",
    "StepSampler",
    "train",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "find_latest_checkpoint",
    "method_table",
    "default_cache_dir",
    "git_commit",
]


@dataclass
class RunResult:
    """How a call of :func:`train` ended."""

    run_dir: Path
    step: int
    total_steps: int
    steps_per_epoch: int
    last_checkpoint: Path | None
    export_dir: Path | None
    wall_time_s: float
    num_replaced: int
    images_per_s: float


def train(
    recipe: Recipe,
    run_dir: str | Path,
    *,
    resume: str | None = None,
    epoch_hook: EpochHook | None = None,
) -> RunResult:
    """Run (or resume) a recipe in ``run_dir``; call from every process of a ``torchrun`` job.

    Args:
        recipe: what to train.
        run_dir: the run folder (``recipe.json``, ``log.jsonl``, ``checkpoints/``, ``export/``).
        resume: None = fresh run (refuses a run dir that already holds checkpoints), ``"auto"`` =
            newest good checkpoint in ``run_dir`` (fresh if there is none), or a checkpoint path.
        epoch_hook: called after the epochs of ``engine.eval_epochs``
            (``selfsup_zoo.training.epoch_hooks``).

    Returns:
        Where the run stopped and what it wrote.
    """
    # A caller that already joined the process group (an evaluation protocol) keeps it.
    caller_group = torch.distributed.is_available() and torch.distributed.is_initialized()
    info = tdist.init_distributed(recipe.engine.device, recipe.engine.dist_backend)
    try:
        return _train(recipe, Path(run_dir), resume, info, epoch_hook)
    finally:
        if not caller_group:
            tdist.cleanup()


def _train(
    recipe: Recipe,
    run_dir: Path,
    resume: str | None,
    info: tdist.DistInfo,
    epoch_hook: EpochHook | None = None,
) -> RunResult:
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = recipe.engine.cudnn_benchmark
    checkpoint = _resume_point(run_dir, resume, info)  # resolved before anything is written
    seed_everything(recipe.engine.seed + info.rank)
    _make_run_dir(run_dir, info)
    data = build_train_data(recipe, info)
    state = TrainState.build(recipe, info, data.sampler, checkpoint)
    stop_step = _stop_step(recipe, state.total_steps)
    _start_session(run_dir, state, stop_step)
    with _run_logger(run_dir, state, stop_step, resumed=checkpoint is not None) as run_logger:
        state.start_clock()
        run_logger.start(time.perf_counter())
        for step, micro_batches in iterate_steps(data, state.step, stop_step):
            metrics = train_step(state, micro_batches, step)
            run_logger.log(metrics, time.perf_counter())
            if epoch_hook is not None and hook_due(state):
                run_epoch_hook(epoch_hook, state, run_dir)
            if _checkpoint_due(state, stop_step):
                _save(state, run_dir)
    wall = state.wall_time_s
    export_dir = _export(state, run_dir, wall) if state.step == stop_step else None
    _write_summary(run_dir, state, wall, export_dir)
    tdist.barrier(info)
    return RunResult(
        run_dir,
        state.step,
        state.total_steps,
        state.steps_per_epoch,
        state.last_checkpoint,
        export_dir,
        wall,
        state.num_replaced,
        run_logger.images_per_s,
    )


def _resume_point(
    run_dir: Path, resume: str | None, info: tdist.DistInfo
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue from (path and contents), or None for a fresh run."""
    found: tuple[Path, dict[str, Any]] | None = None
    if resume is None:
        if list_checkpoints(run_dir):
            raise FileExistsError(
                f"{run_dir} already holds checkpoints of an earlier run: pass --resume auto to "
                "continue it, or --output-dir to start a new run elsewhere"
            )
    elif resume == "auto":
        found = find_latest_checkpoint(run_dir)
        if found is None and info.is_main:
            logger.info("no usable checkpoint in %s: starting from scratch", run_dir)
    else:
        found = Path(resume), load_checkpoint(resume)
    tdist.barrier(info)  # every rank has decided before rank 0 touches the folder
    return found


def _make_run_dir(run_dir: Path, info: tdist.DistInfo) -> None:
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    tdist.barrier(info)


def _stop_step(recipe: Recipe, total_steps: int) -> int:
    """Where this session stops: the end of the schedule, or ``engine.max_steps`` before it."""
    max_steps = recipe.engine.max_steps
    return min(total_steps, max_steps) if max_steps > 0 else total_steps


def _start_session(run_dir: Path, state: TrainState, stop_step: int) -> None:
    """Write ``recipe.json``, remove the debris of an interrupted save, announce the layout."""
    if not state.dist.is_main:
        return
    atomic_write_text(run_dir / "recipe.json", state.recipe_json + "\n")
    remove_stale_temp_files(run_dir)
    recipe = state.recipe
    logger.info(
        "recipe %s: world size %d, per-device batch %d, accumulation %d, global batch %d, "
        "%d iterations/epoch, %d total (running %d..%d)",
        recipe.name,
        state.dist.world_size,
        state.micro_batch,
        state.accum,
        recipe.engine.global_batch,
        state.steps_per_epoch,
        state.total_steps,
        state.step,
        stop_step,
    )


def _run_logger(run_dir: Path, state: TrainState, stop_step: int, *, resumed: bool) -> RunLogger:
    eng = state.recipe.engine
    return RunLogger(
        run_dir,
        state.recipe.name,
        is_main=state.dist.is_main,
        start_step=state.step,
        stop_step=stop_step,
        resumed=resumed,
        global_batch=eng.global_batch,
        log_every=eng.log_every,
        tensorboard=eng.tensorboard,
        progress=eng.progress,
        loss_scale=state.scaler.get_scale if state.scaler is not None else None,
    )


def _checkpoint_due(state: TrainState, stop_step: int) -> bool:
    """After every epoch, every ``engine.ckpt_every_steps`` steps and at the session's end."""
    every = state.recipe.engine.ckpt_every_steps
    step = state.step
    epoch_end = step % state.steps_per_epoch == 0
    return epoch_end or (every > 0 and step % every == 0) or step == stop_step


def _save(state: TrainState, run_dir: Path) -> None:
    """Checkpoint the state (every process takes part; the main one writes and prunes)."""
    payload = state.state_dict()
    if not state.dist.is_main:
        return
    path = checkpoint_path(run_dir, state.step)
    save_checkpoint(payload, path)
    prune_checkpoints(run_dir, state.recipe.engine.keep_last)
    state.last_checkpoint = path


def _export(state: TrainState, run_dir: Path, wall: float) -> Path | None:
    """Write the hub folder ``export/`` at the end of the run (main process, when enabled)."""
    if not (state.dist.is_main and state.recipe.engine.export_at_end):
        return None
    provenance = export_provenance(
        state.recipe,
        state.provenance,
        steps=state.step,
        total_steps=state.total_steps,
        wall_time_s=wall,
    )
    folder = export_method(state.method, state.recipe, run_dir / "export", provenance=provenance)
    logger.info("exported %s (sha256 %s)", folder.path, folder.sha256)
    return Path(folder.path)


def _write_summary(run_dir: Path, state: TrainState, wall: float, export_dir: Path | None) -> None:
    if not state.dist.is_main:
        return
    last = state.last_checkpoint
    summary = {
        "recipe": state.recipe.name,
        "step": state.step,
        "total_steps": state.total_steps,
        "steps_per_epoch": state.steps_per_epoch,
        "world_size": state.dist.world_size,
        "per_device_batch": state.micro_batch,
        "accum": state.accum,
        "wall_time_s": wall,
        "num_replaced": state.num_replaced,
        "last_checkpoint": str(last) if last else None,
        "export_dir": str(export_dir) if export_dir else None,
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
