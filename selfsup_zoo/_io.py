"""Atomic file writes and a cross-process lock, shared by checkpoints, hub folders and data sets."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; writers then rely on atomic renames alone
    fcntl = None  # type: ignore[assignment]  # the module or None, tested before each use


def fsync_dir(path: Path) -> None:
    """Make the renames inside folder ``path`` durable (a no-op where folders cannot be opened).

    Args:
        path: the folder.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's file mode creation mask, read without changing it where the OS allows.

    Returns:
        The umask (e.g. ``0o022``).
    """
    try:  # Linux: read it; os.umask can only be read by setting it (racy with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it under the umask.

    ``tempfile.mkdtemp`` creates 0700 folders and ``shutil.copy2`` copies the source's mode, so a
    folder staged with them and renamed into a shared cache would be private to its writer: this
    sets 0777 (folders) or 0666 (files) minus the umask, e.g. 0755 / 0644 under umask 022.

    Args:
        path: a file or folder owned by this process.
    """
    full = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, full & ~current_umask())


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` so that it never exists half-written under its final name.

    ``write`` fills a temporary file ``.<name>.<random>.tmp`` in the same folder, which is flushed,
    fsynced and renamed over ``path`` (then the folder is fsynced). The temporary name is unique, so
    that processes writing the same ``path`` at once never write into each other's file: the last
    rename wins and every reader sees one complete version. On any error the temporary file is
    removed and the previous ``path``, if any, is left untouched.

    Args:
        path: the file to (over)write.
        write: fills the open binary file; its return value is ignored.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        # "xb": never reuse a file someone else is writing; permissions follow the umask.
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write` for UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


@contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) across processes.

    ``fcntl.flock``: released when the block ends or the process dies, so a crashed holder never
    blocks the others. Without ``fcntl`` (Windows) no lock is taken.

    Args:
        path: the lock file; it stays in place afterwards (removing it would race other lockers).
    """
    if fcntl is None:
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
