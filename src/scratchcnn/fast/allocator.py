"""``keep_freed_memory()``: tell glibc's malloc to keep the memory a training step frees, so
that the next step reuses it instead of asking the kernel for new pages.

Why: NumPy asks malloc for every array, and the plain engine makes all of a step's arrays
afresh (its code stays as a learner reads it; the compiled path reuses its own, see
``workspace.py``). glibc serves a request above its mmap threshold (128 KiB to start, moved up
as large blocks are freed) with pages mapped for it and unmapped again at free, and it hands
the free top of its heap back to the kernel once that is larger than its trim threshold. Either
way the next step's arrays land on new pages, and the kernel zero-fills each 4 KiB page at its
first touch (a page fault). Measured here (``benchmarks/results/allocator.txt``), the plain
engine training the bench's nets at batch 64 and 256 made 1,108 to 2,890 page faults a step;
with the settings below, 0 to 6, and it ran 1.10x to 1.50x as fast.

The settings: no trimming (freed memory stays with the process), and no mapping of single
blocks (every array comes from the heap, where freed blocks are reused). The cost is that the
process keeps its peak memory until it exits, which a training run reaches in its first steps
anyway. The settings are process-wide and stay for the life of the process; they change where
arrays live, never a value. Linux with glibc only: elsewhere this does nothing.

The compiled path's training gains nothing from them: its workspaces reuse their memory
already, and in the same A/B it came out at 0.88x to 1.05x, within this machine's spread. Its
inference of a large batch makes new arrays chunk by chunk: ``Classifier.evaluate`` of the
10,000 MNIST test images with the bundled model made 3,573 page faults per 1000 images and then
49, and ran 1.06x as fast (the median of eight rounds; 0.92x to 1.17x round by round:
``benchmarks/results/allocator-evaluate.txt``). So the command line sets them where the plain
engine trains (``train --plain``), in ``evaluate`` and in ``bench``, for every library it times
alike; the library leaves the allocator alone unless asked.
``SCRATCHCNN_KEEP_MEMORY=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt's parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep and reuse freed memory (see the module's docstring). Returns
    whether it did: False off glibc, or with ``SCRATCHCNN_KEEP_MEMORY=0``."""
    if os.environ.get("SCRATCHCNN_KEEP_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; the largest int is "never" for a threshold
    return bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1)) and bool(mallopt(M_MMAP_MAX, 0))
