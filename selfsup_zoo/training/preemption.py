"""Graceful stop on SIGTERM / SIGINT: finish the current step, checkpoint, exit cleanly.

Slurm sends SIGTERM before it preempts or times out a job, and ``torchrun`` forwards the signals it
receives to its workers; a user stops an interactive run with Ctrl-C (SIGINT). Killed outright, a
run loses every step since its last checkpoint. :class:`PreemptionWatch` turns the first such signal
into a request that the engine reads once per step: the step in flight finishes, the processes
agree on it (the request travels in the step's existing loss all-reduce, so one rank signalled
alone stops every rank at the same step and none is left waiting in a collective), a checkpoint is
written and the run returns normally. A second signal of the same kind restores the previous
handler and re-delivers the signal (the usual "press Ctrl-C twice to force").

The handlers exist only while the watch is entered and the previous ones come back on exit, so
library code leaves no global signal handler behind. Python only lets the main thread install
handlers: in another thread the watch does nothing (the signals keep their usual effect).

A run that stopped this way writes the marker file ``<run>/preempted`` (JSON: step, signal,
checkpoint), which a launcher reads to requeue the job with ``--resume auto``; the next session of
the run removes it.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from selfsup_zoo._io import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "PREEMPTED_MARKER",
    "STOP_SIGNALS",
    "PreemptionWatch",
    "write_preempted_marker",
    "clear_preempted_marker",
]

PREEMPTED_MARKER = "preempted"
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)

# What ``signal.signal`` / ``signal.getsignal`` hand back: a callable, SIG_DFL / SIG_IGN, or None
# (a handler installed from C).
_Handler = Any


class PreemptionWatch:
    """Records the first SIGTERM / SIGINT while entered (a context manager).

    Args:
        signals: the signals that request a stop (default: SIGTERM and SIGINT).
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, _Handler] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived since the watch was entered."""
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self.received is None:
            self.received = sig
            # No logging here: a handler may run while the logging lock is held.
            return
        # Second signal: give it its usual effect.
        previous = self._previous.pop(sig, signal.SIG_DFL)
        signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        signal.raise_signal(sig)

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not the main thread: stop signals keep their usual effect")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


def write_preempted_marker(
    run_dir: Path, *, step: int, signal_name: str, checkpoint: Path | None
) -> Path:
    """Write ``<run_dir>/preempted`` (the launcher's cue to requeue with ``--resume auto``).

    Args:
        run_dir: the run folder.
        step: the step the run stopped at (that of the checkpoint).
        signal_name: the signal that stopped it, e.g. ``"SIGTERM"``.
        checkpoint: the checkpoint written at the stop.

    Returns:
        The marker's path.
    """
    path = run_dir / PREEMPTED_MARKER
    info = {
        "step": step,
        "signal": signal_name,
        "checkpoint": str(checkpoint) if checkpoint else None,
    }
    atomic_write_text(path, json.dumps(info) + "\n")
    return path


def clear_preempted_marker(run_dir: Path) -> None:
    """Remove the marker of an earlier preempted session (a new session has started)."""
    (run_dir / PREEMPTED_MARKER).unlink(missing_ok=True)
