"""Process-group helpers: one code path for a single CPU process, ``torchrun`` on CPUs (gloo) and
``torchrun`` on GPUs (NCCL), on one node or many."""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistInfo",
    "PeerLostError",
    "is_collective_failure",
    "peer_lost_error",
    "init_distributed",
    "cleanup",
    "barrier",
    "all_mean",
    "all_gather_objects",
    "broadcast_object",
    "enable_cpu_sync_batchnorm",
]


# How long a collective waits for the other processes before it fails: long enough for a slow
# checkpoint write or a first-step torch.compile on GPUs, short enough that a job whose peer died
# or hung does not sit idle for long.
DEFAULT_TIMEOUT_S = 600.0

# Words of the errors torch raises when a collective fails because a peer went away (gloo: the
# connection closed or was reset, a read timed out; NCCL: a watchdog timeout or a remote error).
_COMMUNICATION_WORDS = (
    "connection closed",
    "connection reset",
    "broken pipe",
    "timed out",
    "timeout",
    "nccl",
    "gloo",
    "socket",
)


class PeerLostError(RuntimeError):
    """A collective failed or timed out: another process of the job died, hung or is unreachable."""


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str  # "" when not distributed

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(
    device: str = "auto", backend: str = "auto", timeout_min: float = 30.0
) -> DistInfo:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).

    Without those variables this is a single process (no process group). ``device="auto"`` picks
    ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU; ``backend="auto"`` picks NCCL for
    CUDA and gloo for the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("engine.device = 'cuda' but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if world_size == 1:
        return DistInfo(0, 1, 0, dev, "")
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {
            "backend": backend,
            "timeout": datetime.timedelta(minutes=timeout_min),
        }
        if backend == "nccl":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
    logger.info(
        "rank %d/%d (local %d) on %s, backend %s", rank, world_size, local_rank, dev, backend
    )
    return DistInfo(rank, world_size, local_rank, dev, backend)


def is_collective_failure(err: BaseException) -> bool:
    """Whether ``err`` is torch's report of a failed collective (a lost or hung peer).

    Args:
        err: an exception raised inside a multi-process run.

    Returns:
        True for ``torch.distributed.DistError`` and for runtime errors whose text names a broken
        connection, a timeout or the backend (DDP's reducer re-raises the backend's error as a
        plain RuntimeError).
    """
    if isinstance(err, dist.DistError):
        return True
    text = str(err).lower()
    return type(err) is RuntimeError and any(w in text for w in _COMMUNICATION_WORDS)


def peer_lost_error(
    info: DistInfo,
    err: BaseException,
    timeout_s: float,
    step: int,
    last_checkpoint: Path | None,
) -> PeerLostError:
    """The error a process raises when a collective failed: who it is, what was lost, what next.

    Args:
        info: this process.
        err: the backend's error.
        timeout_s: the collective timeout of the run.
        step: the steps this process had finished.
        last_checkpoint: the newest checkpoint of the run, None before one.

    Returns:
        A :class:`PeerLostError` to raise from ``err``.
    """
    others = [r for r in range(info.world_size) if r != info.rank]
    lost = (
        f"rank {others[0]}"
        if len(others) == 1
        else "another rank (one of " + ", ".join(str(r) for r in others) + ")"
    )
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    where = f"the last checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint yet"
    return PeerLostError(
        f"rank {info.rank} of {info.world_size}: lost contact with {lost} after step {step}: a "
        f"collective failed (the process died, hung or became unreachable; collectives time out "
        f"after {timeout_s:g} s): {first_line}. The job stops; {where} (start the job again "
        "with --resume auto)."
    )


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        if info.backend == "nccl":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean over processes (SUM then divide: gloo has no AVG)."""
    if not info.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# --------------------------------------------------------------------------------------------------
# SyncBatchNorm on CPU
# --------------------------------------------------------------------------------------------------
class CpuSyncBatchNorm(_BatchNorm):
    """``nn.SyncBatchNorm`` that also works on CPU tensors over gloo.

    torch's SyncBatchNorm refuses CPU inputs (its statistics kernels exist for accelerators only),
    which would make multi-process CPU runs — and the tests that prove a 2-process run equals a
    1-process run — impossible for methods that synchronise BN. Here the batch statistics are
    reduced with the differentiable ``torch.distributed.nn.functional.all_reduce``, so the gradient
    flows through the global statistics exactly as in torch's own SyncBN backward.

    It derives from ``_BatchNorm``, not ``nn.SyncBatchNorm``: DDP refuses CPU modules that contain
    an ``nn.SyncBatchNorm``. Only the engine's CPU path creates it
    (:func:`enable_cpu_sync_batchnorm`), and its state-dict keys are those of
    SyncBatchNorm/BatchNorm.
    """

    process_group: Any = None

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 - torch's name
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - torch's name
        if not self.training or not (dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        # lazy: torch.distributed.nn pulls in the RPC machinery; only multi-process CPU runs need it
        from torch.distributed.nn.functional import all_reduce as diff_all_reduce

        self._check_input_dim(input)
        dims = [0] + list(range(2, input.dim()))
        x = input.float()
        count = torch.tensor(float(x.numel() // x.shape[1]), dtype=torch.float32)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count.view(1)])
        stats = diff_all_reduce(stats, group=self.process_group or dist.group.WORLD)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        running_mean, running_var = self.running_mean, self.running_var
        tracked = self.num_batches_tracked
        if self.track_running_stats and running_mean is not None and running_var is not None:
            with torch.no_grad():
                if tracked is not None:
                    tracked.add_(1)
                if self.momentum is None:
                    mom = 1.0 / float(tracked) if tracked is not None else 0.0
                else:
                    mom = self.momentum
                unbiased = var.detach() * n / (n - 1).clamp_min(1.0)
                running_mean.mul_(1 - mom).add_(mean.detach().to(running_mean.dtype), alpha=mom)
                running_var.mul_(1 - mom).add_(unbiased.to(running_var.dtype), alpha=mom)
        shape = [1, c] + [1] * (input.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        out: torch.Tensor = y.to(input.dtype)
        return out


def enable_cpu_sync_batchnorm(module: nn.Module) -> int:
    """Turn every ``nn.SyncBatchNorm`` of ``module`` into ``CpuSyncBatchNorm`` in place (same
    parameters and buffers; only the class changes). Returns how many were switched."""
    n = 0
    for m in module.modules():
        if type(m) is nn.SyncBatchNorm:
            # Same fields as SyncBatchNorm; only forward differs (see CpuSyncBatchNorm).
            m.__class__ = CpuSyncBatchNorm  # type: ignore[assignment]
            n += 1
    return n
