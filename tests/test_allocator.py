"""freed_memory_kept: inside it, large tensors freed and allocated again reuse the process's pages instead of
faulting in new ones; after it, glibc's defaults are back (counted in minor page faults, not timed)."""

import subprocess
import sys

import pytest

CHURN = """
import resource, sys, torch
from synthnet.allocator import freed_memory_kept

def churn():
    x = torch.randn(2**24)  # 64 MB: glibc maps anything over 32 MB afresh
    for step in range(20):  # a training loop's pattern: the same large temporaries every step
        if step == 10:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        (x.exp() + x).relu()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

if sys.argv[1] == "keep":
    with freed_memory_kept() as kept:
        assert kept
        print(churn())
else:
    if sys.argv[1] == "after":
        with freed_memory_kept():
            churn()
    print(churn())
"""


def _faults(mode: str) -> int:
    return int(subprocess.run([sys.executable, "-c", CHURN, mode], check=True, capture_output=True,
                              text=True).stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_inside_the_block_and_returned_after_it():
    default, kept, after = _faults("default"), _faults("keep"), _faults("after")
    assert default > 0.9 * 10 * 2 * 2**24 * 4 // 4096  # two temporaries a step, 16,384 pages each, faulted anew
    assert kept < default / 5
    assert after > 0.9 * 10 * 2**24 * 4 // 4096  # at least one temporary a step mapped afresh again
