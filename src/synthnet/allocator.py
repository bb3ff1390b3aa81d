"""Keep freed memory in the process instead of handing it back to the kernel.

glibc serves every allocation over 32 MB with a fresh mmap and unmaps it on free, so the next step's tensor of the
same size faults its pages in again, 4 KB at a time: `synthnet demo --preset mnist1d-cnn` spent 30% of its CPU time
in the kernel that way (2,178 s against 5,098 s user, 1.09 billion minor page faults). Serving them from the heap,
which keeps up to TRIM_THRESHOLD of freed memory at its top, makes that preset's supervised steps 1.3-1.5 x faster
with identical results (`docs/lab-notes.md`) for a few percent more peak memory.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
TRIM_THRESHOLD = 1 << 30  # bytes of freed memory the heap keeps before returning the rest to the kernel


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve large allocations from the heap and keep up to TRIM_THRESHOLD freed; affects
    this process's later allocations and its forked children. Returns False where there is no glibc to tell."""
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    return mallopt is not None and bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
