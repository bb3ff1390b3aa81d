"""keep_freed_memory: large tensors freed and allocated again reuse the process's pages instead of faulting in new
ones (counted in minor page faults, not timed)."""

import subprocess
import sys

import pytest

CHURN = """
import resource, sys, torch
from synthnet.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
x = torch.randn(2**24)  # 64 MB: glibc maps anything over 32 MB afresh
for step in range(20):  # a training loop's pattern: the same large temporaries every step
    if step == 10:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    (x.exp() + x).relu()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    return int(subprocess.run([sys.executable, "-c", CHURN, mode], check=True, capture_output=True,
                              text=True).stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_without_faulting_its_pages_in_again():
    default, kept = _faults("default"), _faults("keep")
    assert default > 0.9 * 10 * 2 * 2**24 * 4 // 4096  # two temporaries a step, 16,384 pages each, faulted anew
    assert kept < default / 5
