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
  written, so the last checkpoint on disk is the last good state. So does a checkpoint that cannot
  be written (disk full): the earlier ones stay intact (``CheckpointWriteError``).
* **One run per folder, checked before anything is written.** The main process holds a ``flock``
  on ``<run>/.run.lock`` for the run's lifetime (``run_lock``); a second run on the folder, a
  checkpoint of another recipe or method, or a data folder whose fingerprint changed since the
  checkpoint (``resume_checks``) are refused before the folder is touched.
* **A stop signal ends the run cleanly.** SIGTERM (Slurm's notice before preemption) or SIGINT on
  any process finishes the step in flight on every process, writes a checkpoint and the
  ``preempted`` marker, and returns with ``RunResult.preempted`` set (``preemption``).
* **A lost process ends the job.** Collectives time out after ``dist_timeout_s``; a collective
  that fails (a peer killed, hung or unreachable) raises :class:`PeerLostError` naming the run's
  last checkpoint instead of leaving the survivors waiting (``dist``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selfsup_zoo._io import atomic_write_text
from selfsup_zoo.training import dist as tdist
from selfsup_zoo.training.allocator import keep_freed_memory
from selfsup_zoo.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    CheckpointWriteError,
    checkpoint_path,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    remove_stale_temp_files,
    save_checkpoint,
)
from selfsup_zoo.training.data import ImageFolderDataset, default_cache_dir
from selfsup_zoo.training.data.holdout import IndexSubset
from selfsup_zoo.training.dist import PeerLostError
from selfsup_zoo.training.epoch_hooks import EpochHook, hook_due, run_epoch_hook
from selfsup_zoo.training.export import export_method
from selfsup_zoo.training.loader import build_train_data, iterate_steps
from selfsup_zoo.training.preemption import (
    PreemptionWatch,
    clear_preempted_marker,
    write_preempted_marker,
)
from selfsup_zoo.training.provenance import export_provenance, git_commit
from selfsup_zoo.training.recipe import Recipe
from selfsup_zoo.training.resume_checks import DataIdentity, check_same_data, check_same_recipe
from selfsup_zoo.training.rng import seed_everything
from selfsup_zoo.training.run_lock import RunFolderLockedError, RunLock
from selfsup_zoo.training.run_logger import RunLogger
from selfsup_zoo.training.sampler import StepSampler
from selfsup_zoo.training.state import TrainState, method_table
from selfsup_zoo.training.step import NonFiniteLossError, train_step

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "CheckpointWriteError",
    "NonFiniteLossError",
    "PeerLostError",
    "RunFolderLockedError",
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
    # Stopped early by SIGTERM/SIGINT: a checkpoint of ``step`` was written; resume with "auto".
    preempted: bool = False
    stop_signal: str | None = None


def train(
    recipe: Recipe,
    run_dir: str | Path,
    *,
    resume: str | None = None,
    dist_timeout_s: float = tdist.DEFAULT_TIMEOUT_S,
    allow_data_change: bool = False,
    epoch_hook: EpochHook | None = None,
) -> RunResult:
    """Run (or resume) a recipe in ``run_dir``; call from every process of a ``torchrun`` job.

    While it runs, SIGTERM and SIGINT request a clean stop (the previous handlers come back when it
    returns): the step in flight finishes on every process, a checkpoint is written and the result
    has ``preempted`` set.

    Args:
        recipe: what to train.
        run_dir: the run folder (``recipe.json``, ``log.jsonl``, ``checkpoints/``, ``export/``).
        resume: None = fresh run (refuses a run dir that already holds checkpoints), ``"auto"`` =
            newest good checkpoint in ``run_dir`` (fresh if there is none), or a checkpoint path.
        dist_timeout_s: how long a collective (and the rendezvous) waits for the other processes
            before the run fails with :class:`PeerLostError` (multi-process runs only).
        allow_data_change: resume even when the data folder's fingerprint differs from the
            checkpoint's (a warning instead of a refusal).
        epoch_hook: called after the epochs of ``engine.eval_epochs``
            (``selfsup_zoo.training.epoch_hooks``).

    Returns:
        Where the run stopped and what it wrote.

    Raises:
        RunFolderLockedError: another live run holds ``run_dir`` (nothing was written).
        CheckpointError: the resume checkpoint is damaged, of another recipe or method, or of a
            changed data folder (nothing was written); ``CheckpointWriteError``: a checkpoint
            could not be written (the earlier ones are intact).
        PeerLostError: a collective failed or timed out (another process died or hung).
    """
    run_path = Path(run_dir)
    # A caller that already joined the process group (an evaluation protocol) keeps it.
    caller_group = torch.distributed.is_available() and torch.distributed.is_initialized()
    with PreemptionWatch() as watch:
        info = tdist.init_distributed(
            recipe.engine.device, recipe.engine.dist_backend, timeout_min=dist_timeout_s / 60.0
        )
        progress = _Progress()
        lock = RunLock(run_path)
        try:
            _lock_run_dir(lock, info, create=False)  # refuse at once while another run holds it
            return _train(
                recipe, run_path, resume, info, watch, progress, lock, allow_data_change, epoch_hook
            )
        except RuntimeError as err:
            if not (info.distributed and tdist.is_collective_failure(err)):
                raise
            raise tdist.peer_lost_error(
                info, err, dist_timeout_s, progress.step, progress.last_checkpoint
            ) from err
        finally:
            lock.release()
            if not caller_group:
                tdist.cleanup()


@dataclass
class _Progress:
    """How far the session got, for the message of a failed collective."""

    step: int = 0
    last_checkpoint: Path | None = None


def _train(
    recipe: Recipe,
    run_dir: Path,
    resume: str | None,
    info: tdist.DistInfo,
    watch: PreemptionWatch,
    progress: _Progress,
    lock: RunLock,
    allow_data_change: bool,
    epoch_hook: EpochHook | None,
) -> RunResult:
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = recipe.engine.cudnn_benchmark
    checkpoint = _resume_point(run_dir, resume, info)  # resolved before anything is written
    seed_everything(recipe.engine.seed + info.rank)
    if recipe.engine.keep_freed_memory:
        keep_freed_memory()  # before the loader forks its workers, which inherit it
    data = build_train_data(recipe, info)
    data_identity = _check_resume(checkpoint, recipe, data.dataset, info, allow_data_change)
    _make_run_dir(run_dir, info, lock)
    state = TrainState.build(recipe, info, data.sampler, checkpoint)
    progress.step, progress.last_checkpoint = state.step, state.last_checkpoint
    state.data_identity = data_identity
    stop_step = _stop_step(recipe, state.total_steps)
    _start_session(run_dir, state, stop_step)
    preempted = False
    steps = iterate_steps(data, state.step, stop_step)
    with _run_logger(run_dir, state, stop_step, resumed=checkpoint is not None) as run_logger:
        state.start_clock()
        run_logger.start(time.perf_counter())
        for step, micro_batches in steps:
            metrics = train_step(state, micro_batches, step, lambda: watch.requested)
            progress.step = state.step
            run_logger.log(metrics, time.perf_counter())
            if epoch_hook is not None and hook_due(state):
                run_epoch_hook(epoch_hook, state, run_dir)
            preempted = metrics.stop_requested and state.step < stop_step
            if preempted or _checkpoint_due(state, stop_step):
                _save(state, run_dir)
                progress.last_checkpoint = state.last_checkpoint
            if preempted:
                break
    if isinstance(steps, Generator):
        steps.close()  # a preempted session ends its loader workers now
    wall = state.wall_time_s
    export_dir = _export(state, run_dir, wall) if state.step == stop_step else None
    _write_summary(run_dir, state, wall, export_dir)
    # The signal may have reached another process only: name it when this one saw it.
    signal_name = watch.received.name if watch.received is not None else None
    if preempted:
        _mark_preempted(run_dir, state, signal_name)
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
        preempted=preempted,
        stop_signal=signal_name if preempted else None,
    )


def _mark_preempted(run_dir: Path, state: TrainState, signal_name: str | None) -> None:
    """Log the stop and write the ``preempted`` marker (main process)."""
    if not state.dist.is_main:
        return
    why = signal_name or "a stop signal on another process"
    write_preempted_marker(
        run_dir, step=state.step, signal_name=why, checkpoint=state.last_checkpoint
    )
    logger.warning(
        "stopped by %s at step %d/%d; checkpoint %s (continue with --resume auto)",
        why,
        state.step,
        state.total_steps,
        state.last_checkpoint,
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


def _check_resume(
    checkpoint: tuple[Path, dict[str, Any]] | None,
    recipe: Recipe,
    dataset: ImageFolderDataset | IndexSubset,
    info: tdist.DistInfo,
    allow_data_change: bool,
) -> DataIdentity:
    """Refuse a checkpoint of another recipe, method or data folder; returns the data's identity.

    The fingerprint (one ``stat`` per image) is taken on the main process and shared, so every
    process decides alike.
    """
    identity: DataIdentity = tdist.broadcast_object(
        DataIdentity.of(dataset) if info.is_main else None, info
    )
    if checkpoint is not None:
        path, saved = checkpoint
        check_same_recipe(saved, path, recipe)
        check_same_data(saved, path, identity, allow_change=allow_data_change)
    return identity


def _on_main_shared(info: tdist.DistInfo, action: Callable[[], object]) -> None:
    """Run ``action`` on the main process; if it raises a ``RunFolderLockedError`` or a
    ``CheckpointError``, every process raises it (no rank is left waiting in a collective)."""
    error: RunFolderLockedError | CheckpointError | None = None
    if info.is_main:
        try:
            action()
        except (RunFolderLockedError, CheckpointError) as err:
            error = err
    shared = tdist.broadcast_object(
        None if error is None else (isinstance(error, CheckpointWriteError), str(error)), info
    )
    if error is not None:
        raise error
    if shared is not None:
        is_write, message = shared
        raise CheckpointWriteError(message) if is_write else RunFolderLockedError(message)


def _lock_run_dir(lock: RunLock, info: tdist.DistInfo, *, create: bool) -> None:
    """Take the run folder's lock on the main process (see ``run_lock``); ``create=False`` only
    checks an existing lock file, writing nothing."""
    _on_main_shared(info, lambda: lock.acquire(create=create))


def _make_run_dir(run_dir: Path, info: tdist.DistInfo, lock: RunLock) -> None:
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    _lock_run_dir(lock, info, create=True)
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
    clear_preempted_marker(run_dir)
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
    _on_main_shared(state.dist, lambda: _write_checkpoint(state, run_dir, payload))


def _write_checkpoint(state: TrainState, run_dir: Path, payload: dict[str, Any]) -> None:
    """Write the checkpoint of ``state.step`` and prune the old ones (main process)."""
    path = checkpoint_path(run_dir, state.step)
    save_checkpoint(payload, path)  # CheckpointWriteError on a full disk: earlier files intact
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
