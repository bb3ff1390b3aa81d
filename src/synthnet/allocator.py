"""Keep freed memory in the process, inside the loops that free and allocate the same large tensors every step.

glibc serves every allocation over 32 MB with a fresh mmap and unmaps it on free, so the next step's tensor of the
same size faults its pages in again, 4 KB at a time: `synthnet demo --preset mnist1d-cnn` spent 30% of its CPU time
in the kernel that way (2,178 s against 5,098 s user, 1.09 billion minor page faults). Serving them from the heap,
which keeps up to TRIM_THRESHOLD of freed memory at its top, makes that preset's supervised steps 1.3-1.5 x faster
with identical results (`docs/lab-notes.md`) for a few percent more peak memory. Only there and in the zoo builder:
a heap without mmap cannot hand back a freed block below a live one, so loops whose blocks change size grow with it:
the evaluation's novelty search to 23 GB on mnist1d-mlp (4.2 GB with glibc's defaults), GRPO's rewards and held-out
checks to 22.3 GB on mnist1d-cnn (9.7 GB with the defaults).
"""

from __future__ import annotations

import ctypes
import sys
from contextlib import contextmanager
from typing import Iterator

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
TRIM_THRESHOLD = 1 << 30  # bytes of freed memory the heap keeps before returning the rest to the kernel
DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}  # glibc's own values, restored on the way out


def _mallopt(settings: dict[int, int]) -> bool:
    """Apply glibc mallopt settings; False where there is no glibc to tell."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if sys.platform.startswith("linux") else None
    return mallopt is not None and all(bool(mallopt(param, value)) for param, value in settings.items())


@contextmanager
def freed_memory_kept() -> Iterator[bool]:
    """Within the block (or a function it decorates), glibc's malloc serves large allocations from the heap and
    keeps up to TRIM_THRESHOLD freed; forked children inherit it. Yields whether glibc took the settings."""
    kept = _mallopt({M_MMAP_MAX: 0, M_TRIM_THRESHOLD: TRIM_THRESHOLD})
    try:
        yield kept
    finally:
        if kept:
            _mallopt(DEFAULTS)
