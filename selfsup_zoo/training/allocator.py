"""Keep freed CPU memory in the process instead of handing it back to the kernel (glibc malloc).

A training loop allocates and frees the same tensors every step. glibc's malloc returns memory to
the kernel eagerly: blocks above its mmap threshold are unmapped when freed, and free memory at the
top of the heap is trimmed once it exceeds 128 kB. The next step's tensors then fault their pages
back in, one zeroed 4 kB page at a time. On the 2-core test machine a 224 px hue adjustment took
~1,300 page faults and 7 ms instead of 0 and 2.4 ms, the CARE view pipeline ran at 55-62 instead of
96-112 images/s, and a CARE CPU step took 9.8 instead of 8.6 s (docs/training.md §8.1).

:func:`keep_freed_memory` raises the trim threshold (freed heap memory stays in the process, to be
reused by the next step) and the mmap threshold to glibc's maximum, 32 MB (blocks up to that size
come from the reusable heap; larger ones are still mapped). Values are unchanged: this only decides
who keeps free pages. The cost is that the process keeps its peak heap size until it exits, which a
training process or a loader worker reaches every step anyway. The settings are per process and
survive ``fork``, so DataLoader workers forked after the call inherit them. The ImageNet recipes
set ``engine.keep_freed_memory = true``; the default is off, because a run of small tensors (the
smoke recipes: 29.1-29.4 s vs 27.2 s for one epoch) does not gain and comes out slightly slower.
Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

__all__ = ["keep_freed_memory"]

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Free heap memory kept before trimming: 1 GiB (glibc's default is 128 kB).
TRIM_THRESHOLD = 1 << 30
#: Largest block served from the heap: glibc's maximum on 64-bit systems (default 128 kB, rising
#: with the blocks freed).
MMAP_THRESHOLD = 32 << 20

_applied = False


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for a training loop (see the module docstring); once per process.

    Returns:
        True where the C library is glibc and both settings were accepted, else False (nothing is
        changed).
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc: no mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    accepted = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    accepted = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and accepted
    if not accepted:
        logger.debug("mallopt refused the training allocator settings; malloc left as it is")
        return False
    _applied = True
    return True
