"""Inference split over processes: the second core, without the GIL.

Why not threads: the worker threads of ``parallel.py`` overlap BLAS calls well, but the short
NumPy passes between them (gathers, folds, casts) take turns with the GIL, so on two cores two
threads ran inference at 0.92x to 1.20x the rate of one (``benchmarks/results/workers.txt``).
A child process has its own interpreter: the same split over one child ran at 1.51x to 1.58x
the rate of the two threads for the keras, fast and user-style nets at batch 1000
(``benchmarks/results/process-split.txt``).

How, for ``workers`` = W (W - 1 children, each started once with BLAS on one thread):

    the child gets a pickled copy of the model once, then its parameters and buffers are
    views into memory it shares with this process: a state block, an input block and a
    logits block, as one file that lives only in memory

    per call, x (N, ...) split as the threads split it, parts[0] .. parts[W-1]:
        for each child c:  copy every parameter and buffer into c's state block
                           (the model may have trained since), x[parts[c]] into its input
                           block, and send "run n"
        meanwhile:         logits[parts[0]] computed here (one BLAS thread)
        then:              read each child's logits from its block (it answers "done")

Each part runs the same ops (``compile(model, 1)``) on the same slice as a worker thread does,
so the logits equal the threads' bit for bit (``tests/test_processes.py``). Only inference:
a training step would also need the gradients summed and batch-norm sums and dropout streams
shared across processes.

Nothing is lost when a child fails: a child that dies, or answers with an error, has its part
computed here instead; the split then stops (a warning says why) and inference goes back to
threads. Children stop with the compiled model (or ``close()``, or at exit); a child whose
parent dies reads end-of-file and exits. POSIX only (the memory and socket are handed to the
child as file descriptors); elsewhere inference uses threads.
"""

from __future__ import annotations

import mmap
import os
import socket
import subprocess
import sys
import tempfile
import threading
import warnings
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO

import numpy as np

from ..nn import Layer, Sequential
from ..nn.layers.base import forward_through
from .parallel import single_threaded_blas, split
from .plan import inference_plan

SUPPORTED = os.name == "posix"
# A part smaller than this many activation values (a sample's layer outputs, times its
# samples) is not worth a hand-off to a process: the seed net (13,530 values a sample) ran
# at 0.91x the threads' rate in parts of 500 samples (6.8 million values), the keras net
# (69,498 a sample) at 1.51x (benchmarks/results/process-split.txt).
MIN_PART_VALUES = 10_000_000
# Children start once the model has spent this long in inference batches that could use
# them: starting one takes about a second of a core (a fresh interpreter imports NumPy and
# scratchcnn), which a one-off evaluation would not win back.
START_AFTER_S = 2.0


def arrays(model: Sequential) -> list[tuple[dict[str, np.ndarray], str]]:
    """Where each parameter and buffer of ``model`` lives, (its dict, its key), in order."""
    return [(d, key) for layer in model.layers for d in (layer.params, layer.buffers) for key in d]


def layout(model: Sequential) -> tuple[tuple[tuple[int, ...], str], ...]:
    """The shapes and dtypes of the state a child reads: a child started for one layout
    cannot read another (after ``model.astype``, say)."""
    return tuple((d[key].shape, d[key].dtype.str) for d, key in arrays(model))


class Blocks:
    """The state, input and logits blocks of one child, as NumPy views of one mapping:
    ``Blocks(model, capacity, memory)`` with room for ``capacity`` samples."""

    def __init__(self, model: Sequential, capacity: int, memory: mmap.mmap) -> None:
        self.capacity = capacity
        self.state: list[np.ndarray] = []
        offset = 0
        for d, key in arrays(model):
            value = d[key]
            self.state.append(np.ndarray(value.shape, value.dtype, memory, offset))
            offset += _aligned(value.nbytes)
        dtype = np.dtype(model.dtype)
        self.inputs = np.ndarray((capacity, *model.input_shape), dtype, memory, offset)
        offset += _aligned(self.inputs.nbytes)
        self.logits = np.ndarray((capacity, *model.output_shapes[-1]), dtype, memory, offset)

    @staticmethod
    def size(model: Sequential, capacity: int) -> int:
        """Bytes the blocks take."""
        state = sum(_aligned(d[key].nbytes) for d, key in arrays(model))
        itemsize = np.dtype(model.dtype).itemsize
        sample = int(np.prod(model.input_shape)) + int(np.prod(model.output_shapes[-1]))
        return (
            state
            + _aligned(capacity * int(np.prod(model.input_shape)) * itemsize)
            + (capacity * sample * itemsize)
        )


def _aligned(nbytes: int) -> int:
    return -(-nbytes // 64) * 64


class ChildError(RuntimeError):
    """A child process died or could not run its part."""


class Child:
    """One child process (``python -m scratchcnn.fast.child``) and its blocks."""

    def __init__(self, model: Sequential, capacity: int) -> None:
        size = Blocks.size(model, capacity)
        # An unnamed file in memory: nothing to clean up if this process is killed.
        with tempfile.TemporaryFile(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as f:
            f.truncate(size)
            self.memory = mmap.mmap(f.fileno(), size)
            ours, theirs = socket.socketpair()
            self.errors = tempfile.TemporaryFile()  # the child's stderr, for a failure's reason
            env = dict(
                os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"
            )
            # The child imports this very package, wherever it was imported from here.
            package_root = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = os.pathsep.join(
                [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
            )
            with theirs:
                self.process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "scratchcnn.fast.child",
                        str(theirs.fileno()),
                        str(f.fileno()),
                        str(size),
                    ],
                    pass_fds=(theirs.fileno(), f.fileno()),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=self.errors,
                    env=env,
                    start_new_session=True,  # a Ctrl-C at the terminal is for the parent
                )
        self.conn = Connection(ours.detach())
        self.blocks = Blocks(model, capacity, self.memory)
        self.conn.send((model, capacity))
        self.ready = False

    def poll_ready(self, wait: bool = False) -> bool:
        """Whether the child has started (waiting for it when ``wait``)."""
        if not self.ready and (wait or self.conn.poll()):
            self.ready = self._answer() == "ready"
        return self.ready

    def start(self, model: Sequential, x: np.ndarray) -> None:
        """Hand the child the current state and ``x`` (n, ...), and let it run."""
        for value, block in zip(
            (d[key] for d, key in arrays(model)), self.blocks.state, strict=True
        ):
            np.copyto(block, value)
        self.blocks.inputs[: len(x)] = x
        self._send(len(x))

    def finish(self, n: int) -> np.ndarray:
        """The logits of the part handed over by ``start``."""
        if self._answer() != "done":
            raise ChildError("the child process answered out of turn")
        return self.blocks.logits[:n]

    def _send(self, message: object) -> None:
        try:
            self.conn.send(message)
        except OSError as error:
            raise ChildError(self._reason(error)) from None

    def _answer(self) -> object:
        try:
            answer = self.conn.recv()
        except (EOFError, OSError) as error:
            raise ChildError(self._reason(error)) from None
        if isinstance(answer, tuple) and answer[:1] == ("error",):
            raise ChildError(f"the child process failed: {answer[1]}")
        return answer

    def _reason(self, error: BaseException) -> str:
        code = self.process.poll()
        self.errors.seek(0)
        lines = self.errors.read().decode(errors="replace").strip().splitlines()
        last = f": {lines[-1]}" if lines else ""
        if code is not None:
            return f"the child process exited with status {code}{last}"
        return f"the child process did not answer ({type(error).__name__}){last}"

    def close(self) -> None:
        _stop(self.process, self.conn, self.errors)
        del self.blocks  # the mapping goes once no view of it is left


def _stop(process: subprocess.Popen, conn: Connection, errors: IO[bytes]) -> None:
    """Ask a child to exit, and make sure it does."""
    try:
        conn.send(None)
    except OSError:
        pass
    conn.close()
    try:
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    errors.close()


class ProcessSplit:
    """``ProcessSplit(model, local_ops, children, capacity)``: inference of a batch over this
    process (``local_ops``, the ops of ``compile(model, 1)``'s inference plan) and
    ``children`` child processes, with room for ``capacity`` samples a part.

    ``ready()`` says whether every child has started; ``forward(x, parts)`` returns the logits
    of x, part 0 computed here and part i by child i-1; ``close()`` stops the children.
    """

    def __init__(
        self, model: Sequential, local_ops: list[Layer], children: int, capacity: int
    ) -> None:
        self.model, self.local_ops, self.capacity = model, local_ops, capacity
        self.layout = layout(model)
        self.children: list[Child] = []
        self.lock = threading.Lock()  # one batch at a time; another thread uses the threads
        self.broken: str | None = None
        try:
            for _ in range(children):
                self.children.append(Child(model, capacity))
        except BaseException:
            self.close()
            raise
        self._finalizer = weakref.finalize(
            self, _stop_all, [(c.process, c.conn, c.errors) for c in self.children]
        )

    def ready(self, wait: bool = False) -> bool:
        """Whether every child has started (waiting for them when ``wait``); False for ever
        once a child has failed."""
        if self.broken is not None:
            return False
        try:
            return all([child.poll_ready(wait) for child in self.children])
        except ChildError as error:
            self._fail(error)
            return False

    def fits(self, parts: list[slice]) -> bool:
        """Whether the children can take these parts of this model's state."""
        return (
            len(parts) == len(self.children) + 1
            and max(p.stop - p.start for p in parts) <= self.capacity
            and layout(self.model) == self.layout
        )

    def forward(self, x: np.ndarray, parts: list[slice]) -> np.ndarray:
        """Logits (N, classes) of ``x``: part 0 here, the others in the children."""
        handed: list[Child] = []
        try:
            for child, part in zip(self.children, parts[1:], strict=True):
                child.start(self.model, x[part])
                handed.append(child)
        except ChildError as error:
            self._fail(error)
        with single_threaded_blas():
            outputs = [forward_through(self.local_ops, x[parts[0]], False)]
        for i, part in enumerate(parts[1:]):
            logits = None
            if self.broken is None and i < len(handed):
                try:
                    logits = handed[i].finish(part.stop - part.start)
                except ChildError as error:
                    self._fail(error)
            if logits is None:  # the child's part, computed here instead
                logits = forward_through(self.local_ops, x[part], False)
            outputs.append(logits)
        return np.concatenate(outputs)  # copies the children's logits out of their blocks

    def _fail(self, error: ChildError) -> None:
        self.broken = str(error)
        warnings.warn(f"inference goes back to threads: {error}", RuntimeWarning, stacklevel=4)
        self.close()

    def close(self) -> None:
        """Stop the children (the split can no longer run)."""
        if self.broken is None:
            self.broken = "closed"
        children, self.children = self.children, []
        for child in children:
            child.close()
        if hasattr(self, "_finalizer"):
            self._finalizer.detach()


def _stop_all(handles: list[tuple[subprocess.Popen, Connection, IO[bytes]]]) -> None:
    for handle in handles:
        _stop(*handle)


class Processes:
    """When a compiled model's inference goes to child processes: ``Processes(model, workers)``
    for W workers (W - 1 children). ``forward(x)`` returns the logits, or None when the batch
    is to run on the threads: too small to split, the children not started or not ready yet,
    or another thread using them. The children start by themselves once the threads have spent
    ``START_AFTER_S`` on batches they could take (``record``), or at once with ``start``."""

    def __init__(self, model: Sequential, workers: int) -> None:
        self.model, self.workers = model, workers
        values = sum(int(np.prod(shape)) for shape in model.output_shapes)  # a sample's
        self.min_part = -(-MIN_PART_VALUES // values)
        self.split: ProcessSplit | None = None
        self.failed: str | None = None  # why a split stopped; none is started again
        self.waited = 0.0  # seconds the threads spent on batches the children could take
        self.wanted = False  # children were started: a restart (larger parts) starts at once

    def parts(self, n: int) -> list[slice]:
        """How a batch of n is split (one slice: it is too small for the children)."""
        return split(n, self.workers, self.min_part)

    def forward(self, x: np.ndarray) -> np.ndarray | None:
        parts = self.parts(len(x))
        if len(parts) < 2 or self.failed is not None:
            return None
        running = self.split
        if running is not None and running.broken is not None:
            self.failed, self.split = running.broken, None
            return None
        if running is not None and not running.fits(parts):  # a larger batch, another dtype
            self.close()
            running = None
        if running is None:
            if self.wanted or self.waited >= START_AFTER_S:
                self.start(max(p.stop - p.start for p in parts))
            return None
        if not running.ready() or not running.lock.acquire(blocking=False):
            return None
        try:
            return running.forward(x, parts)
        finally:
            running.lock.release()

    def record(self, n: int, seconds: float) -> None:
        """The threads took ``seconds`` on a batch of ``n``."""
        if len(self.parts(n)) > 1:
            self.waited += seconds

    def start(self, capacity: int, wait: bool = False) -> bool:
        """Start the children, with room for parts of ``capacity`` samples (unless running
        with room enough); with ``wait``, until they are ready. Returns whether they are."""
        self.wanted = True
        running = self.split
        if running is None or running.broken is not None or running.capacity < capacity:
            self.close()
            try:
                running = self.split = ProcessSplit(
                    self.model, inference_plan(self.model), self.workers - 1, capacity
                )
            except OSError as error:
                self.failed = f"the child processes could not start: {error}"
                warnings.warn(f"inference stays on threads: {self.failed}", RuntimeWarning, 3)
                return False
        return running.ready(wait)

    def close(self) -> None:
        if self.split is not None:
            self.split.close()
            self.split = None
