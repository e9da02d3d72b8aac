"""glibc malloc policy for XLA:CPU: keep freed memory instead of returning it to the OS.

XLA allocates each call's temporaries with malloc. Blocks above glibc's mmap threshold
(128 KiB, growing to at most 32 MiB) are mmapped and unmapped on every call, so every
call page-faults its temporaries back in. Measured on the 2-core CPU (2026-11-21,
skip-gram neg, V = 10k, 1,024 rows × 10 slots per step): k = 25 took 15.4 ms per step by
default and 4.7 ms with mmap off and trimming off; k = 5 was unchanged (1.85 vs 1.99 ms).
Limiting malloc to one arena (the shared notes' GLIBC_TUNABLES) made k = 5 3× slower, so
it is not done here. The cost: the process's RSS stays at its peak.
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
