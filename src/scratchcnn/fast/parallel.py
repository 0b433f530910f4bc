"""Data parallelism over the CPU cores: each core runs a copy of the net on a slice of the batch.

Why: BLAS spreads a matrix product over every core, but NumPy's element-wise passes (im2col,
col2im, max-pool folds, masks, ReLU) run on one, and in a small CNN those passes are half of a
training step. Splitting the batch instead keeps every core busy for the whole step:

    x (N, ...)  ->  x[parts[0]], x[parts[1]], ...        one slice per worker thread
    replica r runs forward (and later backward) on its slice, with single-threaded BLAS
    logits = concatenate(outputs)                         (N, classes)
    dL/dw  = sum_r dL_r/dw                                 exact: the loss's gradient
                                                           already carries the 1/N of the mean

``train_step`` gives each part forward, loss and backward in one job, so that a training step
goes to the threads once: part r's mean loss L_r weighs n_r / N in the batch's mean.

NumPy releases the GIL inside its loops and BLAS calls, so the threads run in parallel.
Replicas share the model's parameter arrays (an optimizer step is seen by all of them) and have
their own caches, workspaces and gradients. Each part draws its dropout uniforms from the
model's generator jumped ahead to where an unsplit pass would reach its first sample
(``dropout_streams``): a split step draws exactly the masks an unsplit one would. The one
difference is rounding: sums over the batch are added in another order.

A batch norm must see the statistics of the whole batch, not of its part: the replicas' batch
norms add up their per-channel sums across the threads (``AllReduce``) before they use them, so
a split step normalises exactly as an unsplit one.
"""

from __future__ import annotations

import copy
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from contextvars import copy_context
from threading import BrokenBarrierError
from typing import Any

import numpy as np

from ..nn import Layer, Sequential, SoftmaxCrossEntropy
from ..nn.layers import BatchNorm1D, BatchNorm2D
from ..nn.layers.base import backward_through, forward_through
from .blas import single_threaded_blas
from .ops import DropoutOp, Op

# A part smaller than this many activation values (the layers' outputs, summed) does not pay
# for handing it to a thread. Measured here: the keras net (69,498 values a sample) broke even
# at 16 samples a part and gained 3-19% at 32; the seed net (13,530) lost at 64 and gained
# 23-32% at 128. So keras batches split from 44 samples, seed batches from 222.
MIN_PART_VALUES = 1_500_000
# A part of a training batch larger than this many activation values runs in chunks of at
# most that many, one after another, each its forward, loss and backward, their gradients
# summed (``part_step``): a chunk's patches and masks are still in cache when its backward
# reads them. Timed split over two processes (benchmarks/results/chunk-size.txt, an AMD EPYC
# with AVX-512 kernels): the user net (47,146 values a sample) went 1.08x in 2x16 of a part of
# 32, 1.06x to 1.18x in chunks of 16 to 32 of 64 (4x16 best) and 1.06x to 1.24x in chunks of
# 16 to 64 of 128 (8x16 best, 7x19 1.22x); the keras net (68,970), whose second conv's
# backward reads its input, not its patches (``winograd.py``), 0.96x to 1.04x, the noise; the
# seed net (13,530) 1.18x in 2 chunks of 64 of a part of 128, but 0.88x in 2 of 32 of a part
# of 64. So about 900,000 values: the user net's parts of 32, 64 and 128 run as 2x16, 4x16
# and 7x19, keras's as 3x11, 5x13 and 10x13, the seed net's parts of 64 whole and of 128 as
# 2x64. (A run on another EPYC with 2,500,000, earlier/chunk-size-2ec2136.txt, had the user
# net at 1.04x in both 2x32 and 4x16 of 64 and 1.15x in 3x43 against 1.09x in 8x16 of 128.)
# Only where a part has a process to itself (``processes.py``): on the worker threads, whose
# parts share one interpreter, a chunk's Python costs more than its cache saves (timed by
# hand, in no file, two runs: the user net 0.88x and 0.96x at batch 128, 1.00x and 0.93x at
# 256; keras 0.91x at 128, 0.92x and 0.91x at 256).
# ``SCRATCHCNN_CHUNKS=0`` in the environment (or ``CHUNKS = False``) switches it off.
CHUNK_VALUES = 900_000
CHUNKS = os.environ.get("SCRATCHCNN_CHUNKS", "1") != "0"


def values_per_sample(model: Sequential) -> int:
    """The activation values of one sample: the model's layer outputs, summed."""
    return sum(int(np.prod(shape)) for shape in model.output_shapes)


def samples_holding(model: Sequential, values: int) -> int:
    """The fewest samples whose activations (``values_per_sample`` each) hold at least
    ``values`` values: the smallest part worth handing over."""
    return -(-values // values_per_sample(model))


def has_batch_norm(model: Sequential) -> bool:
    """Whether ``model`` has a batch norm, whose statistics are the whole batch's."""
    return any(isinstance(layer, (BatchNorm1D, BatchNorm2D)) for layer in model.layers)


def chunk_samples(model: Sequential) -> int | None:
    """The most samples in a chunk of a training part run in a process of its own
    (``part_step``): about CHUNK_VALUES activation values. None (a part runs whole) with a
    batch norm, which must see the whole batch before any sample can go on, or with
    ``CHUNKS`` off."""
    if not CHUNKS or has_batch_norm(model):
        return None
    return samples_holding(model, CHUNK_VALUES)


def split(n: int, workers: int, min_part: int = 1) -> list[slice]:
    """Contiguous, near-equal slices of ``range(n)``: at most ``workers`` of them, each with at
    least ``min_part`` samples (a single slice when n is small)."""
    parts = max(1, min(workers, n // max(min_part, 1)))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class AllReduce:
    """Sums arrays over the threads of one split step: each of the ``parties`` threads calls
    ``total(rank, array)`` and all get the same sum, added in rank order."""

    def __init__(self, parties: int) -> None:
        self._slots: list[np.ndarray | None] = [None] * parties
        self._barrier = threading.Barrier(parties)

    def total(self, rank: int, array: np.ndarray) -> np.ndarray:
        self._slots[rank] = array
        self._barrier.wait()  # every part has put its array
        result = functools.reduce(np.add, self._slots)
        self._barrier.wait()  # every part has read them all before any slot is written again
        return result

    def abort(self) -> None:
        """Release every waiting thread with an error (one of them has failed)."""
        self._barrier.abort()

    def member(self, rank: int) -> SyncedPart:
        return SyncedPart(self, rank)


class SyncedPart:
    """What a batch norm op running one part of a split batch gets as ``sync``: ``total(array)``
    sums over all the parts; ``leader`` (rank 0) updates the shared running statistics."""

    def __init__(self, group: AllReduce, rank: int) -> None:
        self.group, self.rank, self.leader = group, rank, rank == 0

    def total(self, array: np.ndarray) -> np.ndarray:
        return self.group.total(self.rank, array)


def _check_request(
    planned: tuple[tuple[int, ...], np.dtype], shape: tuple[int, ...], dtype: np.dtype | type
) -> None:
    """A part's dropout uniforms were planned for one (shape, dtype); a Dropout asking for
    another would get the wrong share of the batch's draws."""
    if planned != (tuple(shape), np.dtype(dtype)):
        have = f"{planned[0]} {planned[1]}"
        raise RuntimeError(f"this part's dropout uniforms are {have}, not {shape} {dtype}")


class Presampled:
    """Stands in for a Dropout layer's generator: ``random(shape, dtype)`` returns uniforms the
    model drew beforehand for the whole batch, this replica's slice of them."""

    def __init__(self, uniforms: np.ndarray) -> None:
        self.uniforms = uniforms

    def random(self, shape: tuple[int, ...], dtype: np.dtype | type = np.float64) -> np.ndarray:
        _check_request((self.uniforms.shape, self.uniforms.dtype), shape, dtype)
        return self.uniforms


class Substream:
    """Stands in for a Dropout layer's generator in one part: ``random(shape, dtype)`` draws,
    in the worker's thread, the uniforms the model's generator would have drawn for this part
    had it drawn the whole batch. A PCG64 generator can jump ahead: this part's uniforms start
    ``skip`` 64-bit outputs after ``state``."""

    def __init__(self, state: dict, skip: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.state, self.skip, self.shape, self.dtype = state, skip, shape, dtype

    def random(self, shape: tuple[int, ...], dtype: np.dtype | type = np.float64) -> np.ndarray:
        _check_request((self.shape, np.dtype(self.dtype)), shape, dtype)
        bits = np.random.PCG64()
        bits.state = self.state
        bits.advance(self.skip)
        return np.random.Generator(bits).random(shape, dtype)


def dropout_streams(
    rng: np.random.Generator, sample_shape: tuple[int, ...], parts: list[slice], dtype: np.dtype
) -> list[Substream | Presampled]:
    """One stand-in for ``rng`` per part, each drawing that part's share of what
    ``rng.random((N, *sample_shape), dtype)`` would give for the whole batch; ``rng`` moves
    on past the whole batch's draws, as if it had made them.

    Drawing 400,000 uniforms takes 2 ms, so the parts draw their own, side by side. That needs
    a PCG64 (NumPy's default) with no half-used output: a float64 uniform takes one 64-bit
    output and a float32 one half of one (low 32 bits first), so every part must start on a
    whole output. Otherwise the whole batch is drawn here and handed out by slice."""
    n, per_sample = parts[-1].stop, int(np.prod(sample_shape))
    per_output = {np.dtype(np.float64): 1, np.dtype(np.float32): 2}.get(np.dtype(dtype))
    bits = rng.bit_generator
    starts = [part.start * per_sample for part in parts] + [n * per_sample]
    if (
        type(bits) is np.random.PCG64
        and per_output is not None
        and not bits.state["has_uint32"]
        and all(start % per_output == 0 for start in starts)
    ):
        state = bits.state
        streams = [
            Substream(state, start // per_output, (p.stop - p.start, *sample_shape), dtype)
            for start, p in zip(starts[:-1], parts, strict=True)
        ]
        bits.advance(starts[-1] // per_output)
        return streams
    uniforms = rng.random((n, *sample_shape), dtype=dtype)
    return [Presampled(uniforms[part]) for part in parts]


def part_streams(
    ops: list[Layer], parts: list[slice], dtype: np.dtype
) -> list[dict[int, Substream | Presampled]]:
    """For each part of a split training batch, the dropout streams its copy of ``ops`` gets:
    op index -> stream (see ``dropout_streams``), drawn in the order a whole batch draws."""
    streams: list[dict[int, Substream | Presampled]] = [{} for _ in parts]
    for j, op in enumerate(ops):
        if isinstance(op, DropoutOp) and op.dropout.p > 0:
            drawn = dropout_streams(op.dropout.rng, op.sample_shape, parts, dtype)
            for own, stream in zip(streams, drawn, strict=True):
                own[j] = stream
    return streams


def part_step(
    ops: list[Layer],
    x: np.ndarray,
    labels: np.ndarray,
    loss: SoftmaxCrossEntropy,
    share: float,
    chunk: int | None = None,
) -> tuple[np.ndarray, float]:
    """Forward, loss and backward of one part of a split training batch, the part being
    ``share`` of the batch: returns its logits and its share of the batch's mean loss.

    A part's mean loss L_r over its n_r samples is n_r/N of the batch mean's share:
    L = sum_r (n_r / N) L_r, and dL/dlogits_r = (n_r / N) dL_r/dlogits_r.

    A part of more than ``chunk`` samples (``chunk_samples``) runs as near-equal chunks of at
    most that many, one after another, the same way: the chunks are parts of the part, their
    gradients are summed in order, and their dropout masks are the part's, sliced."""
    n = len(x)
    chunks = split(n, -(-n // chunk)) if chunk else [slice(0, n)]
    if len(chunks) == 1:
        return _step(ops, x, labels, loss, share)
    layers = [each for op in ops for each in getattr(op, "layers", (op,)) if each.params]
    sums: list[dict[str, np.ndarray]] = []
    outputs, value = [], 0.0
    for c, streams in zip(chunks, _chunk_streams(ops, chunks, x.dtype), strict=True):
        for j, stream in streams.items():
            ops[j].stream = stream
        logits, chunk_value = _step(ops, x[c], labels[c], loss, share * (c.stop - c.start) / n)
        outputs.append(logits)
        value += chunk_value
        if not sums:  # copied: an op may reuse its gradients' memory in the next chunk
            sums = [{k: g.copy() for k, g in layer.grads.items()} for layer in layers]
            continue
        for total, layer in zip(sums, layers, strict=True):
            for key, g in total.items():
                g += layer.grads[key]
    for total, layer in zip(sums, layers, strict=True):
        layer.grads = total
    return np.concatenate(outputs), value


def _step(
    ops: list[Layer], x: np.ndarray, labels: np.ndarray, loss: SoftmaxCrossEntropy, share: float
) -> tuple[np.ndarray, float]:
    part_loss = copy.copy(loss)  # its own cache; ``loss`` itself is left as it was
    logits = forward_through(ops, x, True)
    value = part_loss.forward(logits, labels)
    backward_through(ops, part_loss.backward() * logits.dtype.type(share))
    return logits, value * share


def _chunk_streams(
    ops: list[Layer], chunks: list[slice], dtype: np.dtype
) -> list[dict[int, Substream | Presampled]]:
    """Each chunk's dropout streams: slices of the uniforms of the part's stream where its
    dropout ops have one (a split batch), else drawn from their generators as
    ``part_streams`` draws for parts."""
    streams: list[dict[int, Substream | Presampled]] = [{} for _ in chunks]
    for j, op in enumerate(ops):
        if isinstance(op, DropoutOp) and op.dropout.p > 0:
            source, op.stream = op.stream, None
            if source is None:
                drawn = dropout_streams(op.dropout.rng, op.sample_shape, chunks, dtype)
            else:
                uniforms = source.random((chunks[-1].stop, *op.sample_shape), dtype)
                drawn = [Presampled(uniforms[c]) for c in chunks]
            for own, stream in zip(streams, drawn, strict=True):
                own[j] = stream
    return streams


def sum_grads(layers: list[Layer], parts_grads: list[list[dict[str, np.ndarray]]]) -> None:
    """Put into each of ``layers`` with parameters the sum of its gradients over the parts
    (``parts_grads[r][i]``: part r's gradients of layer i), added in part order."""
    for i, layer in enumerate(layers):
        if layer.params:
            layer.grads = {
                key: functools.reduce(np.add, (grads[i][key] for grads in parts_grads))
                for key in parts_grads[0][i]
            }


Replica = tuple[list[Layer], list[Layer]]  # a copy of (declared layers, ops)


def replica(layers: list[Layer], ops: list[Layer]) -> Replica:
    """A copy of the declared ``layers`` and their ``ops`` that shares the parameters, the
    running statistics and the dropout generators, with its own caches, gradients and
    workspaces: one part of a split batch runs on it."""
    # deepcopy returns what the memo already holds: the parameters, the buffer dicts and the
    # dropout generators stay shared, the layers' pending caches are not copied, and
    # workspaces copy as empty ones.
    memo: dict[int, Any] = {}
    for layer in layers:
        memo.update((id(a), a) for a in layer.params.values())
        memo[id(layer.buffers)] = layer.buffers
        if hasattr(layer, "rng"):
            memo[id(layer.rng)] = layer.rng
    for each in [*layers, *ops]:
        memo[id(each._saved)] = None
    return copy.deepcopy((layers, ops), memo)


class Replicas:
    """Copies of a model's layers and ops that share its parameters, one per worker thread.

    ``layers`` are the declared layers (they own the parameters and receive the summed
    gradients), ``ops`` the fast ops that compute them (see plan.py). A batch is split into at
    most ``workers`` parts of at least ``min_part`` samples each.
    """

    def __init__(self, layers: list[Layer], ops: list[Layer], workers: int, min_part: int):
        self.layers, self.ops = layers, ops
        self.workers, self.min_part = workers, min_part
        self._replicas: list[Replica] = []
        self._pool: ThreadPoolExecutor | None = None
        self._parts: list[slice] | None = None  # the split of the pending training forward
        self._groups: list[AllReduce] = []  # and its batch norms' sums

    def parts(self, n: int) -> list[slice]:
        """How a batch of ``n`` is split (one slice: it runs whole, in the calling thread)."""
        return split(n, self.workers, self.min_part)

    @property
    def pending(self) -> bool:
        """Whether a split training forward awaits its backward."""
        return self._parts is not None

    def discard(self) -> None:
        """Forget the pending split forward (a new training forward replaced it)."""
        self._parts = None

    def ops_of(self, index: int) -> list[Layer]:
        """The ops of the copy that runs part ``index``."""
        return self._replicas[index][1]

    def _copies(self, count: int) -> list[Replica]:
        while len(self._replicas) < count:
            self._replicas.append(replica(self.layers, self.ops))
        return self._replicas[:count]

    def _run(
        self,
        work: Callable[[slice, list[Layer]], Any],
        parts: list[slice],
        replicas: list[Replica],
        groups: list[AllReduce],
    ) -> list:
        """``work(part, ops)`` for each part and its replica's ops, each in a worker thread
        with single-threaded BLAS; returns the results in part order."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="scratchcnn")

        def guarded(part: slice, ops: list[Layer]) -> Any:
            try:
                return work(part, ops)
            except BaseException:
                for group in groups:  # the other parts may wait for this one's sums
                    group.abort()
                raise

        with single_threaded_blas():
            # Each job runs in a copy of the caller's context: np.errstate lives there.
            futures = [
                self._pool.submit(copy_context().run, guarded, part, ops)
                for part, (_, ops) in zip(parts, replicas, strict=True)
            ]
            wait(futures)
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:  # the part that failed, not one that was only released by the abort
            raise next((e for e in errors if not isinstance(e, BrokenBarrierError)), errors[0])
        return [future.result() for future in futures]

    def _prepare(self, x: np.ndarray, training: bool) -> tuple[list[slice], list[Replica], list]:
        """The parts of a batch ``x``, their replicas and (in training) the sums that the
        replicas' batch norms share. Hands each replica's dropout ops their part's stream of
        uniforms (see ``dropout_streams``), drawn in the order a whole batch draws them."""
        parts = self.parts(len(x))
        replicas = self._copies(len(parts))
        groups: list[AllReduce] = []
        if training:
            norms = [
                [n for op in ops if isinstance(op, Op) for n in op.norm_ops()]
                for _, ops in replicas
            ]  # noqa: E501
            for j in range(len(norms[0])):
                groups.append(AllReduce(len(parts)))
                for rank, part_norms in enumerate(norms):
                    part_norms[j].sync = groups[-1].member(rank)
            for streams, (_, ops) in zip(
                part_streams(self.ops, parts, x.dtype), replicas, strict=True
            ):
                for j, stream in streams.items():
                    ops[j].stream = stream
        return parts, replicas, groups

    def _sum_grads(self, replicas: list[Replica]) -> None:
        sum_grads(self.layers, [[layer.grads for layer in layers] for layers, _ in replicas])

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """Logits of ``x`` (N, ...) computed part by part."""
        parts, replicas, groups = self._prepare(x, training)

        def work(part: slice, ops: list[Layer]) -> np.ndarray:
            return forward_through(ops, x[part], training)

        outputs = self._run(work, parts, replicas, groups)
        if training:
            self._parts, self._groups = parts, groups
        return np.concatenate(outputs)

    def backward(self, grad_logits: np.ndarray) -> np.ndarray | None:
        """Back-propagate through every replica and put the summed gradients in the declared
        layers' ``grads``. Returns dL/dx (N, ...) or None when the first layer makes none."""
        if self._parts is None:
            raise RuntimeError("backward called without a training forward pass")
        parts, self._parts = self._parts, None
        replicas = self._copies(len(parts))

        def work(part: slice, ops: list[Layer]) -> np.ndarray | None:
            return backward_through(ops, grad_logits[part])

        grads_in = self._run(work, parts, replicas, self._groups)
        self._sum_grads(replicas)
        return None if grads_in[0] is None else np.concatenate(grads_in)

    def train_step(
        self, x: np.ndarray, labels: np.ndarray, loss: SoftmaxCrossEntropy
    ) -> tuple[float, np.ndarray]:
        """Forward, loss and backward in one go, each part in its thread: one hand-off to the
        threads instead of two, and the loss runs in parallel too. Returns the batch's mean
        loss and its logits; gradients land in the declared layers' ``grads``."""
        n = len(x)
        parts, replicas, groups = self._prepare(x, True)

        def work(part: slice, ops: list[Layer]) -> tuple[np.ndarray, float]:
            return part_step(ops, x[part], labels[part], loss, (part.stop - part.start) / n)

        results = self._run(work, parts, replicas, groups)
        self._sum_grads(replicas)
        return float(sum(value for _, value in results)), np.concatenate([r[0] for r in results])
