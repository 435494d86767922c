"""Everything a run changes as it trains, in one object that saves to and restores from a
checkpoint.

:class:`TrainState` holds the method (student, teacher, buffers), the model the forward pass runs
(the method, wrapped in DDP and/or ``torch.compile`` when asked), the optimizer, the fp16
GradScaler, the schedules, the global step (which fixes the sampler's position), the counters and
the wall time. :meth:`TrainState.state_dict` is the checkpoint (every rank's RNG state included);
:meth:`TrainState.load_state_dict` puts one back, so an interrupted CPU run resumes to
bit-identical weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup_zoo.training import dist as tdist
from selfsup_zoo.training.checkpoint import CHECKPOINT_FORMAT, CheckpointError
from selfsup_zoo.training.collectives import default_collectives
from selfsup_zoo.training.methods import Method, build_method, method_classes
from selfsup_zoo.training.optim import Schedules, build_optimizer
from selfsup_zoo.training.provenance import RunProvenance, describe_devices, device_name
from selfsup_zoo.training.recipe import Recipe
from selfsup_zoo.training.resume_checks import DATA_KEY, DataIdentity
from selfsup_zoo.training.rng import capture_rng, restore_rng, seed_everything
from selfsup_zoo.training.sampler import StepSampler

logger = logging.getLogger(__name__)

__all__ = [
    "TrainState",
    "method_table",
    "build_recipe_method",
    "synchronise_batchnorm",
    "data_parallel",
]

# Recipe fields whose change between a checkpoint and the resumed run is expected (no warning).
_BENIGN_CHANGES = {
    ("engine", "max_steps"),
    ("engine", "progress"),
    ("engine", "log_every"),
    ("data", "workers"),
    ("data", "root"),
    ("data", "cache_dir"),
    ("engine", "ckpt_every_steps"),
    ("engine", "keep_last"),
}


def method_table(recipe: Recipe, accum: int) -> dict[str, Any]:
    """The ``[method]`` table with the fields the engine owns filled in.

    A method config may declare ``epochs`` (SERE's per-epoch teacher temperatures) and
    ``accum_iter`` (micro-batches per optimizer step, for SERE's centre update); both are the
    engine's numbers (``engine.epochs``; accumulation derived from world size and per-device batch),
    so recipes leave them out and the engine supplies them here.

    Args:
        recipe: the run's recipe.
        accum: micro-batches per optimizer step on each process.

    Returns:
        Keyword arguments of the method's config dataclass.
    """
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


def build_recipe_method(recipe: Recipe, accum: int) -> Method:
    """The recipe's method, freshly initialised on the CPU (see :func:`method_table`)."""
    return build_method(recipe.method.kind, method_table(recipe, accum))


def warn_recipe_changes(old: dict[str, Any], new: Recipe) -> None:
    """Log a warning for every recipe field that differs from the checkpoint's recipe ``old``
    (except those a resume is expected to change, such as ``engine.max_steps``)."""
    for section, table in new.to_dict().items():
        if not isinstance(table, dict) or not isinstance(old.get(section), dict):
            continue
        for k, v in table.items():
            if (section, k) not in _BENIGN_CHANGES and old[section].get(k) != v:
                logger.warning(
                    "recipe changed since the checkpoint: %s.%s %r -> %r",
                    section,
                    k,
                    old[section].get(k),
                    v,
                )


def synchronise_batchnorm(method: Method, device: torch.device) -> None:
    """The BatchNorms that the official run synchronised become SyncBatchNorm (on the CPU
    :class:`~selfsup_zoo.training.dist.CpuSyncBatchNorm`, which works over gloo): how every
    multi-process run, and the communication benchmark, sets up a method."""
    method.convert_sync_batchnorm()
    if device.type == "cpu":
        tdist.enable_cpu_sync_batchnorm(method)


def data_parallel(method: nn.Module, device: torch.device) -> nn.Module:
    """``method`` in DistributedDataParallel as a multi-process run wraps it (every parameter
    takes part in every step: no search for unused ones)."""
    return nn.parallel.DistributedDataParallel(
        method,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=False,
    )


@dataclass
class TrainState:
    """The state of a run on one process (see the module docstring).

    ``step`` counts finished optimizer steps (the next one to run, 0-based); ``last_checkpoint`` is
    the newest checkpoint of the run on disk (where a crash would resume from), None before one.
    """

    recipe: Recipe
    dist: tdist.DistInfo
    method: Method
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    schedules: Schedules
    micro_batch: int
    accum: int
    steps_per_epoch: int
    total_steps: int
    provenance: RunProvenance
    recipe_json: str
    step: int = 0
    num_replaced: int = 0
    wall_time_before: float = 0.0
    last_checkpoint: Path | None = None
    # The training images' fingerprint and count, stored in every checkpoint (resume_checks).
    data_identity: DataIdentity | None = None
    _clock_start: float = field(default_factory=time.perf_counter)

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        recipe: Recipe,
        info: tdist.DistInfo,
        sampler: StepSampler,
        checkpoint: tuple[Path, dict[str, Any]] | None = None,
    ) -> TrainState:
        """Build the method, optimizer, scaler and schedules of a recipe on this process, restore
        ``checkpoint`` (its path and contents) when given, then wrap the model for the processes.

        Call on every process (the device names are gathered from all of them).
        """
        device = info.device
        eng = recipe.engine
        spe, accum = sampler.steps_per_epoch, sampler.accum
        total_steps = eng.epochs * spe
        schedules = Schedules.for_recipe(recipe, total_steps, spe)
        method = build_recipe_method(recipe, accum)
        method.to(device)
        if eng.channels_last:
            method.to(memory_format=torch.channels_last)
        if info.distributed:
            synchronise_batchnorm(method, device)
        # The method's collectives (the iBOT centre's all-reduce) go through the process group.
        method.collectives = default_collectives()
        optimizer = build_optimizer(method.param_groups(), recipe.optim, device)
        scaler = torch.amp.GradScaler(device.type) if eng.precision == "fp16" else None
        recipe_json = recipe.to_json()
        devices = describe_devices(tdist.all_gather_objects(device_name(device), info))
        state = cls(
            recipe=recipe,
            dist=info,
            method=method,
            model=method,
            optimizer=optimizer,
            scaler=scaler,
            schedules=schedules,
            micro_batch=sampler.micro,
            accum=accum,
            steps_per_epoch=spe,
            total_steps=total_steps,
            provenance=RunProvenance.collect(recipe_json, info.world_size, devices),
            recipe_json=recipe_json,
        )
        if checkpoint is not None:
            path, saved = checkpoint
            state.load_state_dict(saved, source=path)
        state.model = state._wrapped_model()
        return state

    def _wrapped_model(self) -> nn.Module:
        model: nn.Module = self.method
        if self.dist.distributed:
            model = data_parallel(self.method, self.dist.device)
        if self.recipe.engine.compile:
            compiled = torch.compile(model)
            assert isinstance(compiled, nn.Module)  # compiling a module gives a module
            model = compiled
        return model

    # ---------------------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The epoch the next step belongs to (0-based)."""
        return self.step // self.steps_per_epoch

    def start_clock(self) -> None:
        """Start timing the training of this session (the wall time adds up over resumes)."""
        self._clock_start = time.perf_counter()

    @property
    def wall_time_s(self) -> float:
        """Training wall time over every session of the run so far."""
        return self.wall_time_before + time.perf_counter() - self._clock_start

    # ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint of the state after ``step`` steps (layout: ``training.checkpoint``).

        A collective: call on every process (each contributes its RNG state); every process gets
        the whole dict, the main one writes it.
        """
        rng_all = tdist.all_gather_objects(capture_rng(self.dist.device), self.dist)
        return {
            "format": CHECKPOINT_FORMAT,
            "recipe": self.recipe_json,
            "step": self.step,
            "epoch": self.epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "world_size": self.dist.world_size,
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": rng_all,
            "num_replaced": self.num_replaced,
            "wall_time_s": self.wall_time_s,
            "git_commit": self.provenance.git_commit,
            "provenance": self.provenance.to_dict(),
            "complete": True,
            **self._data_entry(),
        }

    def _data_entry(self) -> dict[str, Any]:
        """The checkpoint's ``data`` entry (the data identity), empty when it is unknown."""
        return {} if self.data_identity is None else {DATA_KEY: self.data_identity.to_dict()}

    def load_state_dict(self, state: dict[str, Any], source: Path | None = None) -> None:
        """Restore a checkpoint written by :meth:`state_dict` (or by an earlier engine).

        The RNG states come back when the world size is the one saved; otherwise every process is
        re-seeded from (seed, rank, step) and only the data order is unchanged.

        Args:
            state: the checkpoint dict (``load_checkpoint``).
            source: its file, for messages.

        Raises:
            CheckpointError: the checkpoint belongs to a run of another length (the schedules
                would not match).
        """
        info = self.dist
        if info.is_main:
            logger.info("resuming from %s (step %d)", source, state["step"])
            warn_recipe_changes(json.loads(state["recipe"]), self.recipe)
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.wall_time_before = float(state.get("wall_time_s", 0.0))
        self.num_replaced = int(state.get("num_replaced", 0))
        self.last_checkpoint = source
        if int(state.get("total_steps", self.total_steps)) != self.total_steps:
            raise CheckpointError(
                f"checkpoint {source} belongs to a run of {state['total_steps']} steps, this one "
                f"has {self.total_steps} (different data size, batch or epochs): schedules would "
                "not match"
            )
        rng = state.get("rng", [])
        if int(state.get("world_size", -1)) == info.world_size and len(rng) == info.world_size:
            restore_rng(rng[info.rank], info.device)
        else:
            seed_everything(self.recipe.engine.seed + info.rank + 1_000_003 * self.step)
            if info.is_main:
                logger.warning(
                    "world size changed (%s -> %d): RNG streams reseeded; the data order is "
                    "unchanged",
                    state.get("world_size"),
                    info.world_size,
                )
