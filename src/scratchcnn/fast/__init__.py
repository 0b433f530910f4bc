"""Exact rewrites of a ``scratchcnn.nn.Sequential`` that run faster: ``compile(model)``.

What each piece buys, and where it is:

* ``plan.py``       which op computes which layers: ReLU moved after a max-pool, conv (+ batch
                    norm) + max-pool fused; everything else keeps its own op
* ``convpool.py``   the fused conv + pool: patches in pool order, the max folded offset by
                    offset in cache, no conv outputs a ragged pool edge drops
* ``inference.py``  inference through a conv (+ batch norm + max-pool + ReLU) as one op, a few
                    samples at a time, nothing kept for a backward pass
* ``winograd.py``   in it, a 3x3 conv + 2x2 pool with 32 or more input channels in 2.25x
                    fewer multiplications (Winograd's F(2x2, 3x3); SCRATCHCNN_WINOGRAD=0: off)
* ``replay.py``     a small batch's whole inference pass laid out once and replayed: the
                    ops' NumPy calls into memory kept for its shape, none of their Python
                    (``replay.REPLAY_SHAPES = 0``: off)
* ``products.py``   a conv's products cut into pieces that OpenBLAS's small-matrix kernels
                    take, where BLAS runs on one thread (SCRATCHCNN_SMALL_PRODUCTS=0: off)
* ``ops.py``        single-layer ops: offset-major patches, a batched-matmul input gradient,
                    whole-sample per-channel passes, reused buffers
* ``patches.py``, ``channels.py``, ``workspace.py``   the array helpers those use;
  ``blas.py``       BLAS's thread count, and a context that sets it to one
* ``parallel.py``   a batch split over worker threads, one copy of the ops per part, summed
                    gradients, batch-norm sums shared across the parts, dropout streams; a
                    large training part with a process to itself run in chunks that stay in
                    cache, one after another, in a net without batch norm
                    (SCRATCHCNN_CHUNKS=0: off)
* ``processes.py``  a large batch split over this process and child processes
                    (``child.py`` is their program), which, unlike threads, do not take
                    turns with the GIL; they start once such batches have run two seconds
                    (``start_processes()``: at once; ``compile(model, processes=False)`` or
                    SCRATCHCNN_PROCESSES=0: never)
* ``compiled.py``   ``CompiledModel``: the same API as Sequential
* ``allocator.py``  ``keep_freed_memory()``: glibc's malloc set to reuse what a step frees
                    instead of mapping new pages (process-wide; for the plain engine, which
                    makes every array afresh: ``train --plain`` and ``bench`` set it)

Every rewrite is tested against the plain engine (``tests/test_fast.py``). To switch them off,
use the model itself instead of ``compile(model)``: ``Trainer(..., fast=False)``,
``Classifier.fit(..., fast=False)`` or ``scratchcnn train --plain``.
"""

from .allocator import keep_freed_memory
from .blas import blas_threads
from .compiled import CompiledModel, compile

__all__ = ["CompiledModel", "blas_threads", "compile", "keep_freed_memory"]
