"""Batches split over processes: the second core, without the GIL.

Why not threads: the worker threads of ``parallel.py`` overlap BLAS calls well, but the short
NumPy passes between them (gathers, folds, casts) take turns with the GIL, so on two cores two
worker threads ran at 0.89x to 1.20x the rate of one (``benchmarks/results/workers.txt``). A
child process has its own interpreter (``benchmarks/results/process-split.txt`` times the
split below against the threads).

How, for ``workers`` = W (W - 1 children, each started once with BLAS on one thread):

    the child gets a pickled copy of the model once; its parameters and buffers are then
    views into memory it shares with this process, one file that lives only in memory,
    with its part's inputs, labels, logits and gradients (``Blocks``)

    per call, x (N, ...) split as the threads split it, parts[0] .. parts[W-1]:
        for each child c:  copy every parameter and buffer into c's blocks (the optimizer
                           may have moved them), x[parts[c]] (and labels) too, and send
                           ("infer", n), or ("train", n, loss, share, dropout streams)
        meanwhile:         part 0 here (one BLAS thread)
        then:              each child's logits (and share of the loss, and gradients, summed
                           in part order) from its blocks, when it answers ("done", ...)

    a batch norm in training needs the whole batch's sums: the child sends its part's
    sums mid-pass, part 0's norm adds them in part order and sends back the total
    (``ChildSums``, the processes' ``parallel.AllReduce``)

Each part runs the same ops (``compile(model, 1)``) on the same slice as a worker thread does,
with the same dropout streams and share of the loss, so logits, losses and gradients equal the
threads' bit for bit (``tests/test_processes.py``).

Nothing is lost when a child fails: a child that dies, or answers with an error, has its part
computed here instead (a step of a net with batch norm, whose part 0 needed the child's sums,
is undone and run again on the threads); the split then stops, a warning says why, and the
threads take over. Children stop with the compiled model (or ``close()``, or at exit); a child
whose parent dies reads end-of-file and exits. POSIX only (the memory and socket are handed to
the child as file descriptors); elsewhere the threads serve.
"""

from __future__ import annotations

import functools
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, TypeVar

import numpy as np

from ..nn import Sequential, SoftmaxCrossEntropy
from ..nn.layers.base import forward_through
from .blas import single_threaded_blas
from .ops import Op
from .parallel import (
    Replica,
    chunk_samples,
    has_batch_norm,
    part_step,
    part_streams,
    replica,
    samples_holding,
    split,
    sum_grads,
)
from .plan import inference_plan, plan

T = TypeVar("T")
SUPPORTED = os.name == "posix"
# An inference part smaller than this many activation values (a sample's layer outputs, times
# its samples) is not worth a hand-off to a process: a prototype of the split ran the seed
# net (13,530 values a sample) at 0.91x the threads' rate in parts of 500 samples (6.8 million
# values), the keras net (69,498 a sample) at 1.51x (ad hoc, a run since overwritten).
MIN_PART_VALUES = 10_000_000
# A training part (benchmarks/results/train-part-size.txt: a step split in two against the
# batch whole, in windows of a second as a training run goes). Without batch norm: the seed
# net lost at 432,960 values a part (32 samples: 0.91x) and paid at 649,440 (48: 1.23x); the
# keras net lost at 551,760 (8: 0.93x) and paid at 827,640 (12); the user net paid from
# 377,168 (8: 1.33x), so this threshold leaves it a little (its parts of 12, 1.31x). A net
# with batch norm waits for the child's sums at every norm layer: the fast net lost at
# 786,768 (8: 0.82x), broke even at 1,180,152 (12: 1.01x) and paid at 1,573,536 (16: 1.08x).
MIN_TRAIN_PART_VALUES = 600_000
MIN_TRAIN_PART_VALUES_NORM = 1_500_000
# Children start once the model has spent this long on batches that could use them: starting
# one takes about a second of a core (a fresh interpreter imports NumPy and scratchcnn), which
# a one-off evaluation would not win back.
START_AFTER_S = 2.0
# Room for parts of at least this many samples: training parts are small, inference parts of
# 500 common, and a part that does not fit means a restart. Pages never written cost nothing.
MIN_CAPACITY = 1024


def arrays(model: Sequential) -> list[tuple[dict[str, np.ndarray], str]]:
    """Where each parameter and buffer of ``model`` lives, (its dict, its key), in order."""
    return [(d, key) for layer in model.layers for d in (layer.params, layer.buffers) for key in d]


def layout(model: Sequential) -> tuple[tuple[tuple[int, ...], str], ...]:
    """The shapes and dtypes of the state a child reads: a child started for one layout
    cannot read another (after ``model.astype``, say)."""
    return tuple((d[key].shape, d[key].dtype.str) for d, key in arrays(model))


class Blocks:
    """The blocks a child shares with this process, as NumPy views of one mapping:
    ``Blocks(model, capacity, memory)`` with room for parts of ``capacity`` samples.

    ``state``  every parameter and buffer (``arrays(model)``), written here before each run
    ``grads``  the child's gradient of each parameter (``grads[i]``: layer i's, by key)
    ``inputs`` (capacity, *input_shape), ``labels`` (capacity,) int64,
    ``logits`` (capacity, classes)
    Without ``memory`` only ``nbytes`` is worked out."""

    def __init__(self, model: Sequential, capacity: int, memory: mmap.mmap | None = None) -> None:
        self._memory, self.nbytes = memory, 0
        self.state = [self._next(d[key].shape, d[key].dtype) for d, key in arrays(model)]
        self.grads = [
            {key: self._next(value.shape, value.dtype) for key, value in layer.params.items()}
            for layer in model.layers
        ]
        dtype = np.dtype(model.dtype)
        self.inputs = self._next((capacity, *model.input_shape), dtype)
        self.labels = self._next((capacity,), np.dtype(np.int64))
        self.logits = self._next((capacity, *model.output_shapes[-1]), dtype)

    def _next(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The next block (aligned to 64 bytes), or an empty stand-in when only counting."""
        offset, nbytes = self.nbytes, int(np.prod(shape)) * dtype.itemsize
        self.nbytes += -(-nbytes // 64) * 64
        if self._memory is None:
            return np.empty(0, dtype)
        return np.ndarray(shape, dtype, self._memory, offset)


class ChildError(RuntimeError):
    """A child process died or could not run its part."""


class Child:
    """One child process (``python -m scratchcnn.fast.child``) and its blocks."""

    def __init__(self, model: Sequential, capacity: int) -> None:
        size = Blocks(model, capacity).nbytes
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        # The child imports this very package, wherever it was imported from here.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.errors = tempfile.TemporaryFile()  # the child's stderr, for a failure's reason
        ours, theirs = socket.socketpair()
        # An unnamed file in memory: nothing to clean up if this process is killed.
        shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
        try:
            with tempfile.TemporaryFile(dir=shm) as f, theirs:
                f.truncate(size)
                self.memory = mmap.mmap(f.fileno(), size)
                fds = (theirs.fileno(), f.fileno())
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "scratchcnn.fast.child", *map(str, fds), str(size)],
                    pass_fds=fds,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=self.errors,
                    env=env,
                    start_new_session=True,  # a Ctrl-C at the terminal is for the parent
                )
            self.conn = Connection(ours.detach())
        except BaseException:
            ours.close()
            self.errors.close()
            raise
        self.blocks = Blocks(model, capacity, self.memory)
        self.ready = False
        try:
            self.conn.send((model, capacity))
        except BaseException:  # the net does not pickle, or the child is gone already
            self.close()
            raise

    def poll_ready(self, wait: bool = False) -> bool:
        """Whether the child has started (waiting for it when ``wait``)."""
        if not self.ready and (wait or self.conn.poll()):
            self.ready = self._answer() == "ready"
        return self.ready

    def infer(self, model: Sequential, x: np.ndarray) -> None:
        """Hand the child the current state and ``x`` (n, ...) to run inference on."""
        self._put(model, x)
        self._send(("infer", len(x)))

    def train(
        self,
        model: Sequential,
        x: np.ndarray,
        labels: np.ndarray,
        loss: SoftmaxCrossEntropy,
        share: float,
        streams: dict,
        chunk: int | None,
    ) -> None:
        """Hand the child the current state and a part of a training batch (``share`` of
        it, with its dropout ``streams``, in chunks of ``chunk``) to run forward, loss and
        backward on."""
        self._put(model, x)
        self.blocks.labels[: len(x)] = labels
        self._send(("train", len(x), loss, share, streams, chunk))

    def _put(self, model: Sequential, x: np.ndarray) -> None:
        for value, block in zip(
            (d[key] for d, key in arrays(model)), self.blocks.state, strict=True
        ):
            np.copyto(block, value)
        self.blocks.inputs[: len(x)] = x

    def finish(self, n: int) -> tuple[np.ndarray, float | None]:
        """The logits of the part handed over (a view of the block) and, for a training
        part, its share of the loss (its gradients are in ``blocks.grads``)."""
        answer = self._answer()
        if not (isinstance(answer, tuple) and answer[:1] == ("done",)):
            raise ChildError("the child process answered out of turn")
        return self.blocks.logits[:n], answer[1]

    def sums(self) -> np.ndarray:
        """The per-channel sums the child's batch norm sent in the middle of its part."""
        answer = self._answer()
        if not (isinstance(answer, tuple) and answer[:1] == ("sums",)):
            raise ChildError("the child process answered out of turn")
        return answer[1]

    def send_total(self, total: np.ndarray) -> None:
        self._send(("total", total))

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


class ChildSums:
    """What part 0's batch norms get as ``sync`` in a step split over processes (the
    processes' ``parallel.AllReduce``): ``total(array)`` adds to this part's per-channel sums
    those of the same norm in each child, received in part order, and sends them the total.
    This part is the ``leader`` that moves the running statistics."""

    leader = True

    def __init__(self, children: list[Child]) -> None:
        self.children = children

    def total(self, array: np.ndarray) -> np.ndarray:
        result = functools.reduce(np.add, [array, *(c.sums() for c in self.children)])
        for child in self.children:
            child.send_total(result)
        return result


class Snapshot:
    """The state a training step moves besides the gradients: the running statistics and the
    dropout generators. A step of a net with batch norm that a child fails in the middle of is
    undone (``restore``) and run again on the threads."""

    def __init__(self, model: Sequential) -> None:
        self.buffers = [(d, {k: v.copy() for k, v in d.items()}) for d in _buffers(model)]
        self.rngs = [(r, r.bit_generator.state) for r in _generators(model)]

    def restore(self) -> None:
        for d, saved in self.buffers:
            for key, value in saved.items():
                np.copyto(d[key], value)
        for rng, state in self.rngs:
            rng.bit_generator.state = state


def _buffers(model: Sequential) -> list[dict[str, np.ndarray]]:
    return [layer.buffers for layer in model.layers if layer.buffers]


def _generators(model: Sequential) -> list[np.random.Generator]:
    return [
        layer.rng
        for layer in model.layers
        if isinstance(getattr(layer, "rng", None), np.random.Generator)
    ]


class StepUndoneError(Exception):
    """A split training step could not finish; what it moved is put back, for the threads
    to run it."""


class ProcessSplit:
    """``ProcessSplit(model, children, capacity)``: batches split over this process and
    ``children`` child processes, with room for parts of ``capacity`` samples.

    ``ready()`` says whether every child has started; ``forward(x, parts)`` and
    ``train_step(x, labels, loss, parts)`` run part 0 here and part i in child i - 1;
    ``close()`` stops the children. ``runs`` counts the batches the children took part in.
    """

    def __init__(self, model: Sequential, children: int, capacity: int) -> None:
        self.model, self.capacity = model, capacity
        self.layout = layout(model)
        self.infer_ops = inference_plan(model)  # part 0's, and a failed child's part's
        self.train_copy = replica(model.layers, plan(model))  # part 0's in training
        self.chunk = chunk_samples(model)  # a training part's chunks (``part_step``)
        self._spare: Replica | None = None  # a failed child's training part's
        self.children: list[Child] = []
        self.lock = threading.Lock()  # one batch at a time; another thread uses the threads
        self.broken: str | None = None
        self.runs = 0
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
        """Logits (N, classes) of ``x`` in inference."""
        handed = self._hand_out(lambda child, r: child.infer(self.model, x[parts[r]]), parts)
        with single_threaded_blas():
            outputs = [forward_through(self.infer_ops, x[parts[0]], False)]
            for part, result in zip(parts[1:], self._collect(handed, parts), strict=True):
                if result is None:  # the child's part, computed here instead
                    outputs.append(forward_through(self.infer_ops, x[part], False))
                else:
                    outputs.append(result[0])
        return np.concatenate(outputs)  # copies the children's logits out of their blocks

    def train_step(
        self, x: np.ndarray, labels: np.ndarray, loss: SoftmaxCrossEntropy, parts: list[slice]
    ) -> tuple[float, np.ndarray]:
        """Forward, loss and backward of a training batch, as the worker threads make them
        (``parallel.Replicas.train_step``): the same parts, dropout streams and shares of the
        loss, and the gradients summed in part order into the model's layers. Returns the
        batch's mean loss and its logits."""
        n = len(x)
        shares = [(p.stop - p.start) / n for p in parts]
        _, ops = self.train_copy
        norms = [norm for op in ops if isinstance(op, Op) for norm in op.norm_ops()]
        before = Snapshot(self.model) if norms else None
        streams = part_streams(ops, parts, x.dtype)

        def give(child: Child, r: int) -> None:
            part = parts[r]
            child.train(self.model, x[part], labels[part], loss, shares[r], streams[r], self.chunk)

        handed = self._hand_out(give, parts)
        with single_threaded_blas():
            try:
                if before is not None:  # part 0's norms add up the children's sums
                    if self.broken is not None:  # not every child has its part
                        raise ChildError(self.broken)
                    for norm in norms:
                        norm.sync = ChildSums(handed)
                results = [
                    self._train_here(self.train_copy, x, labels, loss, parts, shares, streams, 0)
                ]
            except ChildError as error:  # only where part 0 waits for the children's sums
                if self.broken is None:
                    self._fail(error)
                before.restore()
                raise StepUndoneError from None
            collected = self._collect(handed, parts)
            for r, result in enumerate(collected, start=1):
                if result is not None:
                    grads = [dict(g) for g in handed[r - 1].blocks.grads]
                    results.append((result[0], result[1], grads))
                elif before is not None:  # its sums were in part 0's: the step is undone
                    before.restore()
                    raise StepUndoneError
                else:  # the child's part, computed here instead
                    if self._spare is None:
                        self._spare = replica(self.model.layers, plan(self.model))
                    part = self._train_here(self._spare, x, labels, loss, parts, shares, streams, r)
                    results.append(part)
        sum_grads(self.model.layers, [grads for _, _, grads in results])
        value = float(sum(value for _, value, _ in results))
        return value, np.concatenate([logits for logits, _, _ in results])

    def _train_here(
        self,
        copy_: Replica,
        x: np.ndarray,
        labels: np.ndarray,
        loss: SoftmaxCrossEntropy,
        parts: list[slice],
        shares: list[float],
        streams: list[dict],
        r: int,
    ) -> tuple[np.ndarray, float, list[dict[str, np.ndarray]]]:
        """Part r of a training batch run here on a copy of the layers and ops: its logits,
        share of the loss and gradients (copied: the copy may run another part next)."""
        layers, ops = copy_
        for j, stream in streams[r].items():
            ops[j].stream = stream
        logits, value = part_step(ops, x[parts[r]], labels[parts[r]], loss, shares[r], self.chunk)
        return logits, value, [{k: g.copy() for k, g in layer.grads.items()} for layer in layers]

    def _hand_out(self, give: Callable[[Child, int], None], parts: list[slice]) -> list[Child]:
        """``give(child, r)`` part r to child r - 1, for every child; the children handed a
        part (the ones before a failure)."""
        handed: list[Child] = []
        try:
            for r, child in enumerate(self.children, start=1):
                give(child, r)
                handed.append(child)
        except ChildError as error:
            self._fail(error)
        self.runs += 1
        return handed

    def _collect(self, handed: list[Child], parts: list[slice]) -> list[tuple | None]:
        """What each child answered for its part: (logits, share of the loss), or None where
        it failed (the caller computes that part itself)."""
        results: list[tuple | None] = []
        for i, part in enumerate(parts[1:]):
            result = None
            if self.broken is None and i < len(handed):
                try:
                    result = handed[i].finish(part.stop - part.start)
                except ChildError as error:
                    self._fail(error)
            results.append(result)
        return results

    def _fail(self, error: ChildError) -> None:
        self.broken = str(error)
        warnings.warn(f"back to threads: {error}", RuntimeWarning, stacklevel=5)
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
    """When a compiled model's batches go to child processes: ``Processes(model, workers)`` for
    W workers (W - 1 children). ``forward(x)`` and ``train_step(x, labels, loss)`` return their
    results, or None when the batch is to run on the threads: too small to split, the children
    not started or not ready yet, another thread using them, or a step of a net with batch norm
    undone when a child failed in its middle. The children start by themselves once the
    threads have spent ``START_AFTER_S`` on batches they could take (``on_threads``), or at once
    with ``start``."""

    def __init__(self, model: Sequential, workers: int) -> None:
        self.model, self.workers = model, workers
        self.min_part = {
            False: samples_holding(model, MIN_PART_VALUES),
            True: samples_holding(
                model,
                MIN_TRAIN_PART_VALUES_NORM if has_batch_norm(model) else MIN_TRAIN_PART_VALUES,
            ),
        }
        self.split: ProcessSplit | None = None
        self.failed: str | None = None  # why a split stopped; none is started again
        self.waited = 0.0  # seconds the threads spent on batches the children could take
        self.wanted = False  # children were started: a restart (larger parts) starts at once

    def parts(self, n: int, training: bool = False) -> list[slice]:
        """How a batch of n is split (one slice: it stays on the threads)."""
        return split(n, self.workers, self.min_part[training])

    def forward(self, x: np.ndarray) -> np.ndarray | None:
        parts = self.parts(len(x))
        running = self._running(parts)
        if running is None:
            return None
        try:
            return running.forward(x, parts)
        finally:
            running.lock.release()

    def train_step(
        self, x: np.ndarray, labels: np.ndarray, loss: SoftmaxCrossEntropy
    ) -> tuple[float, np.ndarray] | None:
        parts = self.parts(len(x), training=True)
        running = self._running(parts)
        if running is None:
            return None
        try:
            return running.train_step(x, labels, loss, parts)
        except StepUndoneError:
            return None
        finally:
            running.lock.release()

    def _running(self, parts: list[slice]) -> ProcessSplit | None:
        """The split to run these parts on, ready and locked for the caller; or None (and
        the children started, or restarted larger, when it is time)."""
        if len(parts) < 2 or self.failed is not None:
            return None
        running = self.split
        if running is not None and running.broken is not None:
            self.failed, self.split = running.broken, None
            return None
        largest = max(p.stop - p.start for p in parts)
        if running is not None and not running.fits(parts):  # a larger batch, another dtype
            largest = max(largest, running.capacity)
            self.close()
            running = None
        if running is None:
            if self.wanted or self.waited >= START_AFTER_S:
                self.start(largest)
            return None
        if not running.ready() or not running.lock.acquire(blocking=False):
            return None
        return running

    def on_threads(self, n: int, training: bool, run: Callable[..., T], *args: object) -> T:
        """``run(*args)``, a batch of ``n`` on the threads, timed: its seconds count towards
        starting the children when they could have taken it."""
        start = time.perf_counter()
        result = run(*args)
        if len(self.parts(n, training)) > 1:
            self.waited += time.perf_counter() - start
        return result

    def start(self, capacity: int, wait: bool = False) -> bool:
        """Start the children, with room for parts of ``capacity`` samples (at least
        ``MIN_CAPACITY``) unless running with room enough; with ``wait``, until they are
        ready. Returns whether they are."""
        self.wanted = True
        running = self.split
        if running is None or running.broken is not None or running.capacity < capacity:
            self.close()
            try:
                running = self.split = ProcessSplit(
                    self.model, self.workers - 1, max(capacity, MIN_CAPACITY)
                )
            except Exception as error:  # no interpreter to run, no memory, a net that
                # does not pickle: the threads serve, as they did
                self.failed = f"the child processes could not start: {error}"
                warnings.warn(f"batches stay on threads: {self.failed}", RuntimeWarning, 3)
                return False
        return running.ready(wait)

    def close(self) -> None:
        if self.split is not None:
            self.split.close()
            self.split = None
