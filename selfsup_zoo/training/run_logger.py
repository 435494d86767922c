"""What a run reports as it trains: ``log.jsonl``, TensorBoard, a progress bar and throughput.

Only the main process writes; on the others :class:`RunLogger` does nothing. (Named
``run_logger`` rather than ``logging`` so that it never reads as the standard library's module.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

from selfsup_zoo._io import atomic_write_text
from selfsup_zoo.training.step import StepMetrics

logger = logging.getLogger(__name__)

__all__ = ["RunLogger", "JsonlLog"]


class _ScalarWriter(Protocol):
    """The part of TensorBoard's ``SummaryWriter`` the logger uses."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None: ...

    def close(self) -> None: ...


class _ProgressBar(Protocol):
    """The part of a ``tqdm`` bar the logger uses."""

    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, refresh: bool = True, **kwargs: Any) -> None: ...

    def close(self) -> None: ...


class JsonlLog:
    """``log.jsonl``: one JSON object per line, appended and flushed line by line.

    Args:
        path: the file.
        keep_until_step: None for a fresh run (the file is emptied); for a resumed run, the step
            resumed from: rows the interrupted run wrote after it are dropped, so that the log
            reads as one uninterrupted run.
    """

    def __init__(self, path: Path, keep_until_step: int | None) -> None:
        self.path = path
        if keep_until_step is not None and path.exists():
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
        self._file: IO[str] = open(path, "a", buffering=1)

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self._file.close()


def _tensorboard_writer(folder: Path) -> _ScalarWriter | None:
    try:  # lazy: tensorboard is optional and slow to import
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: JSON lines only
        return None
    writer: _ScalarWriter = SummaryWriter(str(folder))
    return writer


def _progress_bar(total: int, initial: int, desc: str) -> _ProgressBar:
    from tqdm.auto import tqdm  # lazy: only runs that show a bar need tqdm

    bar: _ProgressBar = tqdm(
        total=total, initial=initial, unit="step", dynamic_ncols=True, desc=desc
    )
    return bar


class RunLogger:
    """Logs the run's steps on the main process (a context manager that closes its files).

    A row goes to ``log.jsonl`` (and TensorBoard, when installed and enabled) at the first step,
    every ``engine.log_every`` steps and at the last step, with the lr, weight decay, EMA
    momentum, every loss term, images/s since the previous row, the unreadable images replaced so
    far and, with fp16, the loss scale.

    Args:
        run_dir: the run folder.
        recipe_name: shown on the progress bar.
        is_main: whether this process logs (only the main one does).
        start_step: steps done before this session (the step resumed from, else 0).
        stop_step: the step this session stops at.
        resumed: whether the session continues from a checkpoint (``log.jsonl`` is kept up to
            ``start_step``) or starts the run (it is emptied).
        global_batch: images per step over all processes (for the throughput).
        log_every, tensorboard, progress: the recipe's ``engine`` settings.
        loss_scale: reads the GradScaler's current scale (fp16 runs), else None.
    """

    def __init__(
        self,
        run_dir: Path,
        recipe_name: str,
        *,
        is_main: bool,
        start_step: int,
        stop_step: int,
        resumed: bool,
        global_batch: int,
        log_every: int,
        tensorboard: bool,
        progress: bool,
        loss_scale: Callable[[], float] | None = None,
    ) -> None:
        self.stop_step = stop_step
        self.global_batch = global_batch
        self.log_every = log_every
        self.loss_scale = loss_scale
        self.images_per_s = 0.0
        self._last_time: float | None = None
        self._last_step = start_step
        self._jsonl: JsonlLog | None = None
        self._writer: _ScalarWriter | None = None
        self._bar: _ProgressBar | None = None
        if not is_main:
            return
        self._jsonl = JsonlLog(run_dir / "log.jsonl", start_step if resumed else None)
        if tensorboard:
            self._writer = _tensorboard_writer(run_dir / "tensorboard")
        if progress:
            self._bar = _progress_bar(stop_step, start_step, recipe_name)

    def start(self, now: float) -> None:
        """Start the throughput clock (``time.perf_counter()`` at the session's first step)."""
        self._last_time = now

    def log(self, metrics: StepMetrics, now: float) -> None:
        """Record a finished step (``now``: ``time.perf_counter()`` after it)."""
        if self._jsonl is None:
            return
        step = metrics.step
        if step % self.log_every == 0 or step == self.stop_step or step == 1:
            since = self._last_time if self._last_time is not None else now
            elapsed = max(now - since, 1e-9)
            self.images_per_s = (step - self._last_step) * self.global_batch / elapsed
            self._last_time, self._last_step = now, step
            self._write_row(metrics)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(
                loss=f"{metrics.losses['loss']:.4f}",
                lr=f"{metrics.lr:.3g}",
                img_s=f"{self.images_per_s:.1f}",
                refresh=False,
            )

    def _write_row(self, metrics: StepMetrics) -> None:
        assert self._jsonl is not None
        row: dict[str, Any] = {
            "step": metrics.step,
            "epoch": metrics.epoch,
            "lr": metrics.lr,
            "wd": metrics.weight_decay,
            "momentum": metrics.momentum,
            **metrics.losses,
            "images_per_s": self.images_per_s,
            "num_replaced": metrics.num_replaced_total,
        }
        if self.loss_scale is not None:
            row["loss_scale"] = float(self.loss_scale())
        self._jsonl.write(row)
        if self._writer is not None:
            for k, v in row.items():
                if k != "step":
                    self._writer.add_scalar(f"train/{k}", v, metrics.step)
        if metrics.num_replaced:
            logger.warning(
                "step %d: %d unreadable image(s) replaced (%d so far)",
                metrics.step,
                metrics.num_replaced,
                metrics.num_replaced_total,
            )

    def close(self) -> None:
        """Close the bar, the JSON lines file and the TensorBoard writer."""
        if self._bar is not None:
            self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
