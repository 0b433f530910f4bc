"""BLAS's thread count, one setting for the whole process: how many threads it uses now, and a
context in which it uses one (the worker threads or processes of a split batch are then the
parallelism, ``parallel.py``; products cut for one thread, ``products.py``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from threadpoolctl import ThreadpoolController


@functools.cache
def _blas_pools() -> ThreadpoolController:
    # Finding the loaded BLAS libraries takes milliseconds: once per process.
    return ThreadpoolController().select(user_api="blas")


class _SingleThreadedBlas:
    """BLAS's thread count is one setting for the whole process, so threads that each limit
    it (two requests to a server, a split over threads beside one over processes) must not
    each restore what they found: entered 2 -> 1 by one and 1 -> 1 by the other, the last
    to leave would put back 1 for good. The first to enter sets the limit, the last to leave
    lifts it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.limiter: Any = None
        self.threads = 1  # the count before the limit, while it holds

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self.lock:
            if self.depth == 0:
                self.threads = _blas_threads_now()
                self.limiter = _blas_pools().limit(limits=1)
            self.depth += 1
        try:
            yield
        finally:
            with self.lock:
                self.depth -= 1
                if self.depth == 0:
                    self.limiter.restore_original_limits()


_single_threaded = _SingleThreadedBlas()


def _blas_threads_now() -> int:
    return max((pool["num_threads"] for pool in _blas_pools().info()), default=1)


def blas_threads() -> int:
    """How many threads NumPy's BLAS uses (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS set it), not
    counting a ``single_threaded_blas`` that some thread is in."""
    with _single_threaded.lock:
        return _single_threaded.threads if _single_threaded.depth else _blas_threads_now()


def blas_on_one_thread() -> bool:
    """Whether BLAS runs on one thread now: some thread is in ``single_threaded_blas``, or
    the process runs it so (a child process, OPENBLAS_NUM_THREADS=1)."""
    return _single_threaded.depth > 0 or _blas_threads_now() == 1


def single_threaded_blas() -> AbstractContextManager:
    """A context in which BLAS uses one thread (the worker threads are the parallelism)."""
    return _single_threaded()
