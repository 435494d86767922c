"""One run per run folder: an advisory ``flock`` on ``<run>/.run.lock`` held for the run's lifetime.

The main process of a run opens the lock file, takes an exclusive ``fcntl.flock`` on it without
blocking and writes its host, pid and start time into it. A second run on the same folder fails to
take the lock, reads who holds it and refuses at once, without writing anything (the lock file
already exists, so opening it creates nothing). The kernel releases the lock when the holder's
process ends in any way (SIGKILL, OOM kill, node reboot for a local disk), so a crashed run never
leaves the folder locked: the stale host/pid text in the file is only read when the lock is held.

Network file systems: Linux maps ``flock`` onto the NFS server's byte-range locks (NFSv4, or NFSv3
with the NLM lock manager), which then work across client machines; a mount with ``nolock`` or
``local_lock=flock`` locks per client only, and a file system that cannot lock at all (``ENOLCK``,
``EOPNOTSUPP``) makes the run go on unprotected, with a warning (see docs/training.md).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

__all__ = ["LOCK_NAME", "RunFolderLockedError", "RunLock"]

LOCK_NAME = ".run.lock"
# errno values meaning "this file system cannot lock", as opposed to "someone holds the lock".
_CANNOT_LOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunFolderLockedError(RuntimeError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """The lock of one run folder (see the module docstring); use from the main process only.

    Args:
        run_dir: the run folder.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self, *, create: bool) -> bool:
        """Take the lock without waiting.

        Args:
            create: create the lock file (and the run folder) when missing; with False a folder
                without a lock file is left untouched and False is returned.

        Returns:
            True when the lock is held now (also when this object already held it), False when
            ``create`` is False and there is no lock file yet, or when the file system cannot lock.

        Raises:
            RunFolderLockedError: another process holds it; the message names its host and pid.
        """
        if self._fd is not None:
            return True
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            return False
        try:
            _flock_waiting_for_orphans(fd)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderLockedError(
                f"run folder {self.path.parent} is in use by another run ({holder}); wait for it "
                "to end or stop it, or pass --output-dir/--run-name for a separate run"
            ) from None
        except OSError as err:
            os.close(fd)
            if err.errno not in _CANNOT_LOCK:
                raise
            logger.warning(
                "cannot lock %s (%s): this file system has no working flock, so nothing stops a "
                "second run on the same folder",
                self.path,
                os.strerror(err.errno or 0),
            )
            return False
        self._fd = fd
        self._write_holder()
        return True

    def _write_holder(self) -> None:
        assert self._fd is not None
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)

    def release(self) -> None:
        """Give the lock up (the file stays: deleting it would race with a run opening it)."""
        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


# How long a lock whose recorded holder has died may stay held by processes it forked (DataLoader
# workers notice their parent's death within 5 s and exit; they share the flock until then).
ORPHAN_WAIT_S = 30.0


def _flock_waiting_for_orphans(fd: int) -> None:
    """Take the lock without waiting, except when the holder recorded in the file is a process of
    this host that no longer runs: then its forked children (which inherit the flock) are winding
    down, and the lock is retried for up to :data:`ORPHAN_WAIT_S` seconds.

    Raises:
        BlockingIOError: a live process holds the lock (or the orphans outlived the wait).
    """
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not _holder_is_dead(fd) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _holder_is_dead(fd: int) -> bool:
    """Whether the lock file names a process of this host that no longer exists."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        host, pid = str(info["host"]), int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


def _read_holder(fd: int) -> str:
    """``host H, pid P, started T`` from a lock file's text (what the holder wrote)."""
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        info = json.loads(raw)
        return f"host {info['host']}, pid {info['pid']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown: it has not written its host and pid yet"
