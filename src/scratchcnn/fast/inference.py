"""Inference: a convolution and what follows it (batch norm, max-pool, ReLU) as one op,
``ConvInferenceOp``, run a few samples at a time so that each chunk's conv output is reduced
while it is still in cache. It keeps nothing for a backward pass, so it only runs inference.

In inference a batch norm no longer needs the statistics of the batch: it is a fixed
per-channel affine map, x * scale + shift (``BatchNormOp.affine``), and folds into the
convolution's bias. So every Conv2D [BatchNorm2D] [MaxPool2D of stride = size] [ReLU] runs as

    y = relu(max_k(P_k @ W) * scale + shift)      shift = b * scale + shift_norm   (N, QH, QW, F)

with P_k the patches of the output pixels at pool offset k, in pool order (``patches.py``);
scale = 1 and shift = b with no norm. The maximum comes before the affine map when every
``scale`` is >= 0 (always without a norm): rounding is monotonic, so
max_k fl(fl(a_k * s) + t) = fl(fl(max_k a_k * s) + t) exactly, and the map runs on PH*PW times
fewer values. A negative scale turns maxima into minima, so then the map runs first. Unlike the
training op, the pool need not tile the conv output: the outputs a ragged edge drops are never
computed, with or without a norm. The plain layers round the norm in another order
(((conv + b) - mean) / std * gamma + beta): the results agree to rounding.

In a batch run in chunks, a 3x3 conv of stride 1 with a 2x2 pool and enough channels makes
its maps P_k @ W another way, by Winograd's F(2x2, 3x3), in 2.25x fewer multiplications and
with no patches (``winograd.py``); everything after the products is the same.

A batch small enough to run as one chunk (one image, a photo's few digits) spends much of a
call setting up: padding, strided views, new arrays. So for such shapes the op keeps a
``BatchMemory``, made at the first call: the padded input with its zero border, the patches
and the views that gather them, the weight matrix's memory, the conv maps. Later calls of
that shape only copy and compute (``BatchMemory.run``); the values are the same. A whole
pass of such a batch is laid out the same way and replayed (``replay.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from ..nn.layers import BatchNorm2D, Conv2D, MaxPool2D, ReLU
from ..nn.layers.base import check_rank
from . import products, winograd
from .blas import blas_on_one_thread
from .channels import along_row
from .ops import BatchNormOp, Op
from .patches import PatchGather, pad, patch_matrix
from .workspace import FRESH_MEMORY, Workspace

# Each chunk's conv output is about this large: small enough to stay in cache, large enough
# that the Python loop costs little (the sizes timed against each other:
# benchmarks/results/inference-chunks.txt).
CHUNK_BYTES = 512 * 1024
# With one input channel a sample's patches are few (K = KH*KW values per output pixel, against
# F filters), so the patches of many chunks are gathered at once, up to about this many bytes:
# two long copies instead of two short ones a chunk, which cost the worker threads less
# (benchmarks/results/threads.txt and inference-gather.txt).
GATHER_BYTES = 2 << 20
# The input shapes an op keeps a BatchMemory for, at most (the oldest is dropped); 0 turns
# the memory off.
MEMORY_SHAPES = 4


def chunk_samples(offsets: int, row: int, itemsize: int) -> int:
    """How many samples a chunk holds: its conv maps (``offsets`` of a sample's ``row``
    output values each) about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (offsets * itemsize * row))


class BatchMemory:
    """``BatchMemory(shape, dtype, conv, pool, relu)``: what a conv inference over a batch of
    one input ``shape`` (N, H, W, C) that runs as one chunk reuses from call to call: the
    padded input, whose zero border is written once; the patches and the strided views that
    gather them (``PatchGather``); the weight matrix's memory; the conv maps and the views of
    them and of the output that each step writes through. ``run`` is then the op's few NumPy
    calls and nothing else. ``lock``: one call at a time (the server answers requests on
    several threads); a call that finds it taken uses new memory instead."""

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: np.dtype,
        conv: Conv2D,
        pool: tuple[int, int],
        relu: bool = False,
    ) -> None:
        n, h, w, c = shape
        ph, pw = conv.padding
        self.conv, self.dtype = conv, np.dtype(dtype)
        self.padded = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype)
        self.inside = self.padded[:, ph : ph + h, pw : pw + w]
        single = c == 1  # one channel: offset-major, as ``patch_matrix`` gathers it
        self.gather = PatchGather(
            self.padded, conv.kernel_size, conv.stride, single, pool, Workspace()
        )
        self.matrix = self.gather.matrix  # a view of the patches' memory: made once
        oh, ow, f = conv.output_shape(shape[1:])
        qh, qw, offsets = oh // pool[0], ow // pool[1], pool[0] * pool[1]
        self.output_shape = (n, qh, qw, f)
        row = qh * qw * f
        self.width = row if n > 1 else f  # as conv_inference tiles its vectors
        kh, kw = conv.kernel_size
        self.weights = np.empty((kh * kw * c, f), dtype)  # conv.weight_matrix(), in place
        self._kernel_order = self.weights.reshape(kh, kw, c, f)
        self.maps = (
            None if offsets == 1 else np.empty((offsets, n * row // self.width, self.width), dtype)
        )
        self.zeros = np.zeros(self.width, dtype) if relu else None
        self.output = np.empty((n, row), dtype)
        self.lock = threading.Lock()

    def run(self, affine: tuple[np.ndarray, np.ndarray] | None, out: np.ndarray) -> np.ndarray:
        """``conv_inference`` of the batch now in ``inside``, into ``out`` (N, QH*QW*F):
        gather, product, maximum, affine map, ReLU, into memory laid out beforehand."""
        self.gather()
        np.copyto(self._kernel_order, self.conv.params["weight"].transpose(2, 3, 1, 0))
        y = out.reshape(-1, self.width)
        if self.maps is None:
            np.matmul(self.matrix, self.weights, out=y.reshape(-1, self.weights.shape[1]))
        else:
            np.matmul(self.matrix, self.weights, out=self.maps.reshape(len(self.matrix), -1))
        scale_row, shift_row, map_first = affine_rows(self.conv, affine, self.width, self.dtype)
        finish(self.maps, y, scale_row, shift_row, map_first, self.zeros)
        return out


class BatchMemories:
    """A ConvInferenceOp's BatchMemory for each input shape, the last MEMORY_SHAPES of them.
    Threads may ask at once (the server): making and dropping one takes a lock, finding one
    does not. A copy (the worker threads copy the ops) starts empty: the memory belongs to its
    owner."""

    def __init__(self) -> None:
        self._by_shape: dict[tuple, BatchMemory] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, make: Callable[[], BatchMemory]) -> BatchMemory:
        """The memory kept under ``key``, made by ``make()`` if there is none."""
        memory = self._by_shape.get(key)
        if memory is None:
            with self._lock:
                memory = self._by_shape.get(key)
                if memory is None:
                    while self._by_shape and len(self._by_shape) >= MEMORY_SHAPES:
                        del self._by_shape[next(iter(self._by_shape))]  # the oldest
                    memory = self._by_shape[key] = make()
        return memory

    def __len__(self) -> int:
        return len(self._by_shape)

    def values(self) -> list[BatchMemory]:
        return list(self._by_shape.values())

    def __deepcopy__(self, memo: dict) -> BatchMemories:
        return BatchMemories()


def affine_rows(
    conv: Conv2D, affine: tuple[np.ndarray, np.ndarray] | None, width: int, dtype: np.dtype
) -> tuple[np.ndarray | None, np.ndarray, bool]:
    """The conv's bias and a norm's inference ``affine`` (scale, shift; None: no norm) as one
    map y * scale + shift, each vector tiled along ``width`` values (``channels.along_row``):
    (scale or None, shift, whether the map must come before the maximum: a negative scale
    would turn the maxima into minima)."""
    scale, shift = None, conv.params["bias"].astype(dtype, copy=False)  # no norm: the bias
    if affine is not None:
        scale = affine[0].astype(dtype, copy=False)
        shift = shift * scale + affine[1]
    map_first = scale is not None and bool((scale < 0).any())
    scale_row = None if scale is None else along_row(scale, width, dtype)
    return scale_row, along_row(shift, width, dtype), map_first


def finish(
    maps: np.ndarray | None,
    y: np.ndarray,
    scale_row: np.ndarray | None,
    shift_row: np.ndarray,
    map_first: bool,
    zeros: np.ndarray | None,
) -> None:
    """``y = relu(max_k(maps[k]) * scale + shift)`` in place (maps None: the pool-less conv
    output is already in y; map_first: the affine map on every map, then the maximum; zeros
    None: no ReLU)."""
    if maps is not None:
        if map_first:
            np.multiply(maps, scale_row, out=maps)
            np.add(maps, shift_row, out=maps)
        np.maximum.reduce(maps, axis=0, out=y)  # np.max, less its Python wrapper
    if maps is None or not map_first:
        if scale_row is not None:
            np.multiply(y, scale_row, out=y)
        np.add(y, shift_row, out=y)
    if zeros is not None:  # a row of zeros: NumPy's maximum with a scalar is 4x slower
        np.maximum(y, zeros, out=y)


def conv_inference(
    x: np.ndarray,
    conv: Conv2D,
    pool: tuple[int, int] = (1, 1),
    affine: tuple[np.ndarray, np.ndarray] | None = None,
    relu: bool = False,
    conv_shape: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """``relu(maxpool(norm(conv(x))))`` of x (N, H, W, C) -> (N, QH, QW, F), for a pool of
    ``pool`` stepped by its size ((1, 1): none) and a norm given as its inference ``affine``
    (scale, shift) per channel (None: none), in new memory. ``conv_shape``: the conv's output
    shape (OH, OW, F) for this input, when the caller has checked it already. See the
    module's docstring."""
    n, dtype = len(x), x.dtype
    oh, ow, f = conv.output_shape(x.shape[1:]) if conv_shape is None else conv_shape
    qh, qw, offsets = oh // pool[0], ow // pool[1], pool[0] * pool[1]
    row = qh * qw * f  # one sample's output, channels last
    # The per-channel vectors are tiled along a whole sample, so that NumPy's inner loops run a
    # sample long (``channels.channelwise``); for one sample the tiling costs what it saves.
    width = row if n > 1 else f
    scale_row, shift_row, map_first = affine_rows(conv, affine, width, dtype)  # tiled once
    zeros = np.zeros(width, dtype) if relu else None
    out = np.empty((n, row), dtype)
    # A batch run in chunks may make each chunk's maps from its padded input by Winograd's
    # F(2x2, 3x3), in fewer products and with no patches (winograd.py): then a group is a chunk.
    fewer_products = None
    if winograd.applies(conv, pool):
        fewer_products = winograd.PooledWinograd(conv, dtype)
        step = winograd.chunk_samples(qh * qw, f, out.itemsize)
    else:
        weights = conv.weight_matrix()
        k = weights.shape[0]
        step = chunk_samples(offsets, row, out.itemsize)
    # memory reused over the chunks; one chunk asks for new memory, without a workspace's checks
    work = Workspace() if step < n else FRESH_MEMORY
    one_thread = blas_on_one_thread()  # then the products run in pieces (products.py)
    # One input channel: the patches of many chunks are gathered at once (see GATHER_BYTES).
    span = step
    if fewer_products is None and x.shape[-1] == 1 and step < n:
        span *= max(1, GATHER_BYTES // (step * offsets * qh * qw * k * out.itemsize))
    for g in range(0, n, span):
        group = x[g : g + span]
        if fewer_products is not None:
            padded = pad(group, conv.padding, work)
        else:
            patches = patch_matrix(group, conv.kernel_size, conv.stride, conv.padding, pool, work)
            by_offset = patches.reshape(offsets, -1, k)  # (offsets, samples * QH*QW, K), a view
        for i in range(0, len(group), step):
            m = min(step, len(group) - i)
            y = out[g + i : g + i + m].reshape(-1, width)
            maps = None if offsets == 1 else work.get("conv_out", (offsets, len(y), width), dtype)
            if fewer_products is not None:
                fewer_products.maps(padded, maps, work)
            else:
                # a whole group in one product; a chunk of a larger group, one product per offset
                rows = patches if m == len(group) else by_offset[:, i * qh * qw : (i + m) * qh * qw]
                if maps is None:
                    products.matmul(rows.reshape(-1, k), weights, y.reshape(-1, f), one_thread)
                else:
                    products.matmul(rows, weights, maps.reshape(*rows.shape[:-1], f), one_thread)
            finish(maps, y, scale_row, shift_row, map_first, zeros)
    return out.reshape(n, qh, qw, f)


class ConvInferenceOp(Op):
    """``ConvInferenceOp(conv, norm=None, pool=None, relu=None)`` computes, in inference only,
    ``relu(pool(norm(conv(x))))``: a Conv2D, then optionally a BatchNorm2D, a MaxPool2D whose
    stride is its size and a ReLU. Input (N, H, W, C) -> output (N, QH, QW, F)."""

    def __init__(
        self,
        conv: Conv2D,
        norm: BatchNorm2D | None = None,
        pool: MaxPool2D | None = None,
        relu: ReLU | None = None,
    ) -> None:
        if pool is not None and pool.stride != pool.pool_size:
            raise ValueError(f"ConvInferenceOp needs a max-pool whose stride is its size: {pool!r}")
        super().__init__()
        self.conv, self.pool, self.relu = conv, pool, relu
        self.norm = None if norm is None else BatchNormOp(norm)
        self.layers = tuple(layer for layer in (conv, norm, pool, relu) if layer is not None)
        self._conv_shapes: dict[tuple[int, ...], tuple[int, int, int]] = {}  # checked inputs
        self._memories = BatchMemories()

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = self.conv.output_shape(input_shape)
        return shape if self.pool is None else self.pool.output_shape(shape)

    @property
    def pool_size(self) -> tuple[int, int]:
        """The fused pool's size, (1, 1) without one."""
        return (1, 1) if self.pool is None else self.pool.pool_size

    def affine(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The norm's inference map (scale, shift) per channel, None without a norm."""
        return None if self.norm is None else self.norm.affine()

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if training:
            raise RuntimeError(f"{self!r} runs inference only (forward with training=False)")
        check_rank(x, 4, self.conv, "(N, H, W, C)")
        conv_shape = self._conv_shapes.get(x.shape[1:])
        if conv_shape is None:  # checked once for each input shape: a batch of one notices
            self.output_shape(x.shape[1:])  # checks the input
            conv_shape = self._conv_shapes[x.shape[1:]] = self.conv.output_shape(x.shape[1:])
        pool = self.pool_size
        x = x.astype(self.conv.dtype, copy=False)
        relu = self.relu is not None
        memory = self.memory(x.shape, x.dtype, conv_shape)
        if memory is None or not memory.lock.acquire(blocking=False):
            return conv_inference(x, self.conv, pool, self.affine(), relu, conv_shape)
        try:
            np.copyto(memory.inside, x)
            out = memory.run(self.affine(), np.empty_like(memory.output))
            return out.reshape(memory.output_shape)
        finally:
            memory.lock.release()

    def runs_whole(
        self, shape: tuple[int, ...], itemsize: int, conv_shape: tuple[int, int, int] | None = None
    ) -> bool:
        """Whether a batch of input ``shape`` runs as one chunk through the patches (the
        batches that keep a BatchMemory); ``conv_shape``: the conv's output shape, if known."""
        oh, ow, f = self.conv.output_shape(shape[1:]) if conv_shape is None else conv_shape
        ph, pw = self.pool_size
        return shape[0] <= chunk_samples(ph * pw, (oh // ph) * (ow // pw) * f, itemsize)

    def new_memory(self, shape: tuple[int, ...], dtype: np.dtype) -> BatchMemory:
        """A BatchMemory of this op for batches of input ``shape`` (N, H, W, C)."""
        return BatchMemory(shape, dtype, self.conv, self.pool_size, self.relu is not None)

    def memory(
        self, shape: tuple[int, ...], dtype: np.dtype, conv_shape: tuple[int, int, int]
    ) -> BatchMemory | None:
        """The BatchMemory kept for batches of input ``shape``, made now if need be; None
        when such a batch runs in chunks (or MEMORY_SHAPES is 0: the memory switched off)."""
        if MEMORY_SHAPES < 1 or not self.runs_whole(shape, dtype.itemsize, conv_shape):
            return None
        return self._memories.get((shape, dtype), lambda: self.new_memory(shape, dtype))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise RuntimeError(f"{self!r} runs inference only: it has no backward")
