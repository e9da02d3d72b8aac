"""glibc malloc policy for XLA:CPU: keep freed memory instead of returning it to the OS.

XLA allocates each call's temporaries with malloc. Blocks above glibc's mmap threshold
(128 KiB, growing to at most 32 MiB) are mmapped and unmapped on every call, so every
call page-faults its temporaries back in. Turning mmap and trimming off makes steps with
large temporaries (e.g. k = 25) several times faster and leaves small ones unchanged;
limiting malloc to one arena (GLIBC_TUNABLES) made them slower, so it is not done here.
The figures and the command that measures them: docs/performance.md, "The malloc policy".
The cost: the process's RSS stays at its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from absl import logging

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied = False


def keep_freed_memory() -> bool:
    """Turns off mmap for large blocks and trimming; True if applied (glibc only)."""
    global _applied
    if _applied:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        logging.info("not glibc (%s): malloc policy left as it is", name)
        return False
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
