"""The training engine: one loop for every method.

It owns processes (``torchrun``: NCCL on GPUs, gloo on CPUs), devices, data loading, precision,
the optimizer and its per-iteration schedules, the EMA teacher cadence, checkpoints, exact resume,
logging, progress and the final export. It knows nothing about CARE or SERE: a method plugs in
through ``selfsup_zoo.training.methods.base.Method``.

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

import contextlib
import json
import logging
import math
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from selfsup_zoo._io import atomic_write, atomic_write_text
from selfsup_zoo.training import data as sdata
from selfsup_zoo.training import dist as tdist
from selfsup_zoo.training.data import default_cache_dir  # noqa: F401  (re-exported, see __all__)
from selfsup_zoo.training.methods import StepInfo, build_method
from selfsup_zoo.training.optim import (
    build_optimizer,
    clip_gradients,
    lr_schedule,
    momentum_schedule,
    wd_schedule,
)
from selfsup_zoo.training.recipe import Recipe

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
    "default_cache_dir",
    "git_commit",
]

CHECKPOINT_FORMAT = "selfsup_zoo.training.checkpoint/1"
_CKPT_PREFIX = "step_"
_CKPT_SUFFIX = ".pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing, truncated, corrupt, or from another run)."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without writing a checkpoint."""


@dataclass
class RunResult:
    run_dir: Path
    step: int
    total_steps: int
    steps_per_epoch: int
    last_checkpoint: Path | None
    export_dir: Path | None
    wall_time_s: float
    num_replaced: int
    images_per_s: float


# ==================================================================================================
# Sampling
# ==================================================================================================
class StepSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's micro-batches of ``(epoch, index)`` pairs, step by step.

    Global step ``s`` of epoch ``e`` uses positions ``[s·G, (s+1)·G)`` of a permutation seeded by
    (seed, e); rank ``r`` takes ``[r·G/W, (r+1)·G/W)`` of that, split into ``accum`` micro-batches
    of ``micro`` images. The tail that does not fill a global batch is dropped (drop_last). The
    pairs carry the epoch to persistent workers (the dataset accepts ``(epoch, index)``).
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        micro_batch: int,
        world_size: int,
        rank: int,
        seed: int,
    ) -> None:
        if global_batch % (world_size * micro_batch):
            raise ValueError(
                f"global batch {global_batch} is not a multiple of world size {world_size} "
                f"x per-device batch {micro_batch}"
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.micro = micro_batch
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.accum = global_batch // (world_size * micro_batch)
        self.steps_per_epoch = num_samples // global_batch
        self.epoch = 0
        self.start_step = 0

    def set_position(self, epoch: int, start_step: int) -> None:
        """Start the next iteration at ``start_step`` (0-based, within the epoch) of ``epoch``."""
        self.epoch = epoch
        self.start_step = start_step

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = self.permutation(self.epoch)
        share = self.global_batch // self.world_size
        for s in range(self.start_step, self.steps_per_epoch):
            base = s * self.global_batch + self.rank * share
            for a in range(self.accum):
                chunk = perm[base + a * self.micro : base + (a + 1) * self.micro]
                yield [(self.epoch, int(i)) for i in chunk]


# ==================================================================================================
# Checkpoints
# ==================================================================================================
def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write atomically: temp file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a training checkpoint (``weights_only=True``); CheckpointError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError/EOFError/UnpicklingError/... on damage
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: {err}). "
            "It was probably cut off while being written or copied; delete it and resume from the "
            "previous checkpoint (--resume auto does this automatically)."
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a selfsup_zoo training checkpoint (format "
            f"{state.get('format') if isinstance(state, dict) else type(state)})"
        )
    missing = [k for k in ("recipe", "step", "method", "optimizer", "complete") if k not in state]
    if missing or state["complete"] is not True:
        raise CheckpointError(f"checkpoint {path} is incomplete (missing {missing})")
    return state


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first (by step)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        name = p.name
        if name.startswith(_CKPT_PREFIX) and name.endswith(_CKPT_SUFFIX):
            try:
                found.append((int(name[len(_CKPT_PREFIX) : -len(_CKPT_SUFFIX)]), p))
            except ValueError:
                continue
    return [p for _, p in sorted(found)]


def find_latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """Newest checkpoint that loads; damaged newer ones are reported and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as err:
            logger.error("%s -- falling back to the previous checkpoint", err)
    return None


def _checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"{_CKPT_PREFIX}{step:09d}{_CKPT_SUFFIX}"


# ---- RNG state as plain tensors/numbers (weights_only-safe) ---------------------------------------
def _capture_rng(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python_version": int(py_state[0]),
        "python_state": torch.tensor(py_state[1], dtype=torch.int64),
        "python_gauss": py_state[2],
    }
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    random.setstate(
        (
            state["python_version"],
            tuple(int(v) for v in state["python_state"].tolist()),
            state["python_gauss"],
        )
    )
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ==================================================================================================
# Helpers
# ==================================================================================================
def git_commit() -> str:
    """Commit of the source tree the package runs from ("" outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    if out.returncode != 0:
        return ""
    commit = out.stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _to_device(
    batch: dict[str, Any],
    device: torch.device,
    mean: torch.Tensor,
    std: torch.Tensor,
    channels_last: bool,
) -> dict[str, Any]:
    """Move a collated batch to the device and turn every uint8 image tensor into normalised fp32.

    Images stay uint8 through the loader (4x less host memory and transfer); the conversion is
    ToTensor's /255 followed by Normalize's (x-mean)/std, done on the device.
    """
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            v = value.to(device, non_blocking=True)
            if v.dtype == torch.uint8 and v.dim() >= 4 and v.shape[-3] == 3:
                v = sdata.normalize_uint8(v, mean, std)
                if channels_last and v.dim() == 4:
                    v = v.contiguous(memory_format=torch.channels_last)
            out[key] = v
        else:
            out[key] = value
    return out


def _precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class _JsonlLog:
    def __init__(self, path: Path, keep_until_step: int | None) -> None:
        self.path = path
        if keep_until_step is not None and path.exists():
            # On resume, drop rows the interrupted run wrote after the checkpoint we restart from,
            # so the log reads as one uninterrupted run.
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= keep_until_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue  # a line cut off by the crash
            # atomic: a crash during the rewrite must not lose the rows kept
            atomic_write_text(path, "".join(k + "\n" for k in kept))
        elif keep_until_step is None:
            path.write_text("")
        self.f = open(path, "a", buffering=1)

    def write(self, row: dict[str, Any]) -> None:
        self.f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self.f.close()


def _tensorboard_writer(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: JSON lines only
        return None
    return SummaryWriter(str(folder))


def _build_data(recipe: Recipe, info: tdist.DistInfo) -> Any:
    d = recipe.data
    if not d.root:
        raise ValueError(
            f"recipe {recipe.name} has no data root: pass --data-root DIR (a folder in ImageNet "
            "layout <root>/<class>/<image>, e.g. .../imagenet/train)"
        )
    root = sdata.resolve_data_root(d.root, sdata.data_cache_dir(d.cache_dir))
    views = sdata.build_views(d.views, d.view_args)
    dataset = sdata.ImageFolderDataset(root, views, seed=recipe.engine.seed, strict=d.strict)
    if d.expected_images and len(dataset) != d.expected_images and info.is_main:
        logger.warning(
            "data root %s holds %d images; the official run used %d (iterations per epoch "
            "and schedules follow the data found)",
            root,
            len(dataset),
            d.expected_images,
        )
    return dataset, sdata.collate_views


def method_table(recipe: Recipe, accum: int) -> dict[str, Any]:
    """The ``[method]`` table with the fields the engine owns filled in.

    A method config may declare ``epochs`` (SERE's per-epoch teacher temperatures) and
    ``accum_iter`` (micro-batches per optimizer step, for SERE's centre update); both are the
    engine's numbers (``engine.epochs``; accumulation derived from world size and per-device batch),
    so recipes leave them out and the engine supplies them here.
    """
    import dataclasses

    from selfsup_zoo.training.methods import method_classes

    table = dict(recipe.method.config)
    _, cfg_cls = method_classes(recipe.method.kind)
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    if "epochs" in names:
        if table.get("epochs", recipe.engine.epochs) != recipe.engine.epochs:
            raise ValueError(
                f"method.epochs ({table['epochs']}) differs from engine.epochs "
                f"({recipe.engine.epochs}); leave method.epochs out"
            )
        table["epochs"] = recipe.engine.epochs
    if "accum_iter" in names:
        table["accum_iter"] = accum
    return table


# ==================================================================================================
# The loop
# ==================================================================================================
def train(recipe: Recipe, run_dir: str | Path, *, resume: str | None = None) -> RunResult:
    """Run (or resume) a recipe in ``run_dir``; call from every process of a ``torchrun`` job.

    ``resume``: None = fresh run (refuses a run dir that already holds checkpoints), ``"auto"`` =
    newest good checkpoint in ``run_dir`` (fresh if there is none), or a checkpoint path.
    """
    info = tdist.init_distributed(recipe.engine.device, recipe.engine.dist_backend)
    try:
        return _train(recipe, Path(run_dir), resume, info)
    finally:
        tdist.cleanup()


def _train(recipe: Recipe, run_dir: Path, resume: str | None, info: tdist.DistInfo) -> RunResult:
    eng, opt_cfg = recipe.engine, recipe.optim
    device = info.device
    main = info.is_main
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = eng.cudnn_benchmark

    # ---- resume point (resolved before anything is written) --------------------------------------
    state: dict[str, Any] | None = None
    ckpt_path: Path | None = None
    if resume is None:
        if list_checkpoints(run_dir):
            raise FileExistsError(
                f"{run_dir} already holds checkpoints of an earlier run: pass --resume auto to continue "
                "it, or --output-dir to start a new run elsewhere"
            )
    elif resume == "auto":
        found = find_latest_checkpoint(run_dir)
        if found is None:
            if main:
                logger.info("no usable checkpoint in %s: starting from scratch", run_dir)
        else:
            ckpt_path, state = found
    else:
        ckpt_path = Path(resume)
        state = load_checkpoint(ckpt_path)
    tdist.barrier(info)  # every rank has decided before rank 0 touches the folder
    if state is not None and main:
        logger.info("resuming from %s (step %d)", ckpt_path, state["step"])
        _warn_recipe_changes(json.loads(state["recipe"]), recipe)

    # ---- seeds -----------------------------------------------------------------------------------
    _seed_everything(eng.seed + info.rank)

    # ---- data ------------------------------------------------------------------------------------
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    tdist.barrier(info)
    dataset, collate = _build_data(recipe, info)
    micro, _ = eng.batch_layout(info.world_size)
    sampler = StepSampler(
        len(dataset), eng.global_batch, micro, info.world_size, info.rank, eng.seed
    )
    accum, spe = sampler.accum, sampler.steps_per_epoch
    if spe == 0:
        raise ValueError(
            f"the data set ({len(dataset)} images) is smaller than one global batch "
            f"({eng.global_batch})"
        )
    total_steps = eng.epochs * spe
    stop_step = min(total_steps, eng.max_steps) if eng.max_steps > 0 else total_steps
    workers = recipe.data.workers
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=recipe.data.pin_memory and device.type == "cuda",
        persistent_workers=recipe.data.persistent_workers and workers > 0,
        prefetch_factor=recipe.data.prefetch_factor if workers > 0 else None,
        # A private generator: creating loader iterators must not consume the global torch RNG,
        # which the model may use (drop path), or resuming mid-epoch would change it.
        generator=torch.Generator().manual_seed(eng.seed),
    )
    mean = torch.tensor(recipe.data.mean, device=device).view(3, 1, 1)
    std = torch.tensor(recipe.data.std, device=device).view(3, 1, 1)

    # ---- schedules -------------------------------------------------------------------------------
    lrs = lr_schedule(opt_cfg, eng.global_batch, total_steps, spe)
    wds = wd_schedule(opt_cfg, total_steps)
    moms = momentum_schedule(recipe.ema.momentum_base, total_steps)

    # ---- model, optimizer, precision -------------------------------------------------------------
    method = build_method(recipe.method.kind, method_table(recipe, accum))
    method.to(device)
    if eng.channels_last:
        method.to(memory_format=torch.channels_last)
    if info.distributed:
        method.convert_sync_batchnorm()
        if device.type == "cpu":
            tdist.enable_cpu_sync_batchnorm(method)
    optimizer = build_optimizer(method.param_groups(), opt_cfg, device)
    scaler = torch.amp.GradScaler(device.type) if eng.precision == "fp16" else None
    trainable = [p for g in optimizer.param_groups for p in g["params"]]

    step = 0
    wall_before = 0.0
    num_replaced_total = 0
    if state is not None:
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        wall_before = float(state.get("wall_time_s", 0.0))
        num_replaced_total = int(state.get("num_replaced", 0))
        if int(state.get("total_steps", total_steps)) != total_steps:
            raise CheckpointError(
                f"checkpoint {ckpt_path} belongs to a run of {state['total_steps']} steps, this one has "
                f"{total_steps} (different data size, batch or epochs): schedules would not match"
            )
        rng = state.get("rng", [])
        if int(state.get("world_size", -1)) == info.world_size and len(rng) == info.world_size:
            _restore_rng(rng[info.rank], device)
        else:
            _seed_everything(eng.seed + info.rank + 1_000_003 * step)
            if main:
                logger.warning(
                    "world size changed (%s -> %d): RNG streams reseeded; the data order is "
                    "unchanged",
                    state.get("world_size"),
                    info.world_size,
                )
        del state

    model: nn.Module = method
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(
            method,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False,
        )
    if eng.compile:
        model = torch.compile(model)  # type: ignore[assignment]

    # ---- bookkeeping -----------------------------------------------------------------------------
    # Fixed for the run: computed once, not at every checkpoint (git_commit runs two subprocesses).
    recipe_json = recipe.to_json()
    commit = git_commit()
    writer = None
    log: _JsonlLog | None = None
    if main:
        atomic_write_text(run_dir / "recipe.json", recipe_json + "\n")
        for stale in (
            (run_dir / "checkpoints").glob(".*.tmp") if (run_dir / "checkpoints").is_dir() else []
        ):
            stale.unlink()  # a save interrupted by a crash
        log = _JsonlLog(
            run_dir / "log.jsonl", keep_until_step=step if ckpt_path is not None else None
        )
        if eng.tensorboard:
            writer = _tensorboard_writer(run_dir / "tensorboard")
        logger.info(
            "recipe %s: world size %d, per-device batch %d, accumulation %d, global batch %d, "
            "%d iterations/epoch, %d total (running %d..%d)",
            recipe.name,
            info.world_size,
            micro,
            accum,
            eng.global_batch,
            spe,
            total_steps,
            step,
            stop_step,
        )
    bar = None
    if main and eng.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=stop_step, initial=step, unit="step", dynamic_ncols=True, desc=recipe.name)

    precision_ctx = _precision_context(eng.precision, device)
    last_ckpt: Path | None = ckpt_path
    t0 = time.perf_counter()
    t_log, step_log = t0, step
    images_per_s = 0.0
    ema_offset = recipe.ema.index_offset

    def checkpoint(at_step: int) -> Path | None:
        rng_all = tdist.all_gather_objects(_capture_rng(device), info)
        if not main:
            return None
        path = _checkpoint_path(run_dir, at_step)
        save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "recipe": recipe_json,
                "step": at_step,
                "epoch": at_step // spe,
                "steps_per_epoch": spe,
                "total_steps": total_steps,
                "world_size": info.world_size,
                "method": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "rng": rng_all,
                "num_replaced": num_replaced_total,
                "wall_time_s": wall_before + time.perf_counter() - t0,
                "git_commit": commit,
                "complete": True,
            },
            path,
        )
        for old in list_checkpoints(run_dir)[: -max(eng.keep_last, 1)]:
            old.unlink(missing_ok=True)
        return path

    model.train()
    try:
        while step < stop_step:
            epoch = step // spe
            sampler.set_position(epoch, step % spe)
            batches = iter(loader)
            while step < stop_step and step // spe == epoch:
                info_s = StepInfo(
                    step=step, epoch=epoch, steps_per_epoch=spe, total_steps=total_steps
                )
                lr, wd = float(lrs[step]), float(wds[step])
                for g in optimizer.param_groups:
                    g["lr"] = lr
                    g["weight_decay"] = wd if g.get("apply_wd", True) else 0.0
                sums: dict[str, torch.Tensor] = {}
                replaced = 0
                for a in range(accum):
                    batch = next(batches)
                    replaced += int(batch.pop("num_replaced", 0))
                    batch = _to_device(batch, device, mean, std, eng.channels_last)
                    sync = a == accum - 1 or not info.distributed
                    with contextlib.nullcontext() if sync else model.no_sync():  # type: ignore[operator]
                        with precision_ctx:
                            terms = model(batch, info_s)
                        loss = terms["loss"].float() / accum
                        (scaler.scale(loss) if scaler is not None else loss).backward()
                    for k, v in terms.items():
                        v = v.detach().float().reshape(())
                        sums[k] = sums[k] + v / accum if k in sums else v / accum
                keys = list(sums)
                packed = torch.stack(
                    [sums[k] for k in keys] + [torch.tensor(float(replaced), device=device)]
                )
                packed = tdist.all_mean(packed, info).cpu()
                values = {k: float(packed[i]) for i, k in enumerate(keys)}
                replaced_all = int(round(float(packed[-1]) * info.world_size))
                if not all(math.isfinite(v) for v in values.values()):
                    optimizer.zero_grad(set_to_none=True)
                    raise NonFiniteLossError(_nan_message(step, epoch, values, recipe, last_ckpt))
                if scaler is not None:
                    scaler.unscale_(optimizer)
                clip_gradients(trainable, opt_cfg.clip_grad, opt_cfg.clip_mode)
                method.after_backward(info_s)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                momentum = float(moms[step + ema_offset])  # moms has total_steps + 1 entries
                method.update_teacher(momentum)
                step += 1
                num_replaced_total += replaced_all

                # ---- logging ---------------------------------------------------------------------
                if main and (step % eng.log_every == 0 or step == stop_step or step == 1):
                    now = time.perf_counter()
                    images_per_s = (step - step_log) * eng.global_batch / max(now - t_log, 1e-9)
                    t_log, step_log = now, step
                    row = {
                        "step": step,
                        "epoch": step / spe,
                        "lr": lr,
                        "wd": wd,
                        "momentum": momentum,
                        **values,
                        "images_per_s": images_per_s,
                        "num_replaced": num_replaced_total,
                    }
                    if scaler is not None:
                        row["loss_scale"] = float(scaler.get_scale())
                    assert log is not None
                    log.write(row)
                    if writer is not None:
                        for k, v in row.items():
                            if k != "step":
                                writer.add_scalar(f"train/{k}", v, step)
                    if replaced_all:
                        logger.warning(
                            "step %d: %d unreadable image(s) replaced (%d so far)",
                            step,
                            replaced_all,
                            num_replaced_total,
                        )
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{values['loss']:.4f}",
                        lr=f"{lr:.3g}",
                        img_s=f"{images_per_s:.1f}",
                        refresh=False,
                    )

                # ---- checkpoints -----------------------------------------------------------------
                epoch_end = step % spe == 0
                periodic = eng.ckpt_every_steps > 0 and step % eng.ckpt_every_steps == 0
                if epoch_end or periodic or step == stop_step:
                    saved = checkpoint(step)
                    last_ckpt = saved or last_ckpt
            del batches
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
        if writer is not None:
            writer.close()

    wall = wall_before + time.perf_counter() - t0
    export_dir: Path | None = None
    if main:
        if eng.export_at_end and step == stop_step:
            from selfsup_zoo.training.export import export_method

            folder = export_method(
                method,
                recipe,
                run_dir / "export",
                provenance=_provenance(recipe, commit, info.world_size, wall, step, total_steps),
            )
            export_dir = Path(folder.path)
            logger.info("exported %s (sha256 %s)", export_dir, folder.sha256)
        summary = {
            "recipe": recipe.name,
            "step": step,
            "total_steps": total_steps,
            "steps_per_epoch": spe,
            "world_size": info.world_size,
            "per_device_batch": micro,
            "accum": accum,
            "wall_time_s": wall,
            "num_replaced": num_replaced_total,
            "last_checkpoint": str(last_ckpt) if last_ckpt else None,
            "export_dir": str(export_dir) if export_dir else None,
        }
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    tdist.barrier(info)
    return RunResult(
        run_dir,
        step,
        total_steps,
        spe,
        last_ckpt,
        export_dir,
        wall,
        num_replaced_total,
        images_per_s,
    )


def _provenance(
    recipe: Recipe, commit: str, world_size: int, wall: float, step: int, total: int
) -> dict[str, Any]:
    import timm

    return {
        "recipe": recipe.name,
        "checkpoint": recipe.checkpoint,
        "method": recipe.method.kind,
        "git_commit": commit,
        "world_size": world_size,
        "wall_time_s": round(wall, 3),
        "steps": step,
        "total_steps": total,
        "torch": torch.__version__,
        "timm": timm.__version__,
    }


def _nan_message(
    step: int, epoch: int, values: dict[str, float], recipe: Recipe, last: Path | None
) -> str:
    terms = ", ".join(f"{k}={v:.6g}" for k, v in values.items())
    hints = []
    if recipe.engine.precision == "fp16":
        hints.append("switch engine.precision to bf16 or fp32 (fp16 overflows more easily)")
    hints.append(f"lower the learning rate (optim.base_lr = {recipe.optim.base_lr:g})")
    if recipe.optim.clip_mode == "none":
        hints.append("enable gradient clipping (optim.clip_mode, optim.clip_grad)")
    where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    return (
        f"non-finite loss at step {step} (epoch {epoch}): {terms}. The run stopped before the "
        f"optimizer step; {where} (resume with --resume auto). Try: " + "; ".join(hints) + "."
    )


def _warn_recipe_changes(old: dict[str, Any], new: Recipe) -> None:
    cur = new.to_dict()
    benign = {
        ("engine", "max_steps"),
        ("engine", "progress"),
        ("engine", "log_every"),
        ("data", "workers"),
        ("data", "root"),
        ("data", "cache_dir"),
        ("engine", "ckpt_every_steps"),
        ("engine", "keep_last"),
    }
    for section, table in cur.items():
        if not isinstance(table, dict) or not isinstance(old.get(section), dict):
            continue
        for k, v in table.items():
            if (section, k) not in benign and old[section].get(k) != v:
                logger.warning(
                    "recipe changed since the checkpoint: %s.%s %r -> %r",
                    section,
                    k,
                    old[section].get(k),
                    v,
                )
