"""A convolution's matrix products cut into pieces that OpenBLAS's small-matrix kernels take.

OpenBLAS, the BLAS in NumPy's wheels, runs a product of at most 100^3 multiply-adds
(M * N * K <= 1,000,000) through kernels that skip packing the two matrices into blocks first
(so its SkylakeX kernels, which this machine runs, do). A convolution's products are long and
narrow: many thousand patch rows, K of 9 to 288 values, F of 8 to 64 filters, far over that
size. Cut into blocks of rows that fit it, on one thread here, the forward products ran 1.12x
to 1.52x as fast, the input gradients 1.22x to 1.45x, a first layer's weight gradient 1.64x to
2.39x, a wider layer's 0.95x to 1.27x (``benchmarks/results/small-products.txt``):

    matmul       out = a @ b            a (M, K) cut into blocks of R rows, R = 1e6 // (K * F),
                                        all blocks in one NumPy call over a stack of them; each
                                        output value is the same dot product as uncut
    weight_grad  a^T @ g                the sum over blocks of a_block^T @ g_block: the same
                                        sum, added in another order (rounding only)

One product on two threads beats the pieces, which run on one (the small kernels are
single-threaded): so the pieces are cut only where BLAS runs on one thread, as in each part of
a split batch and in a child process (``blas.blas_on_one_thread``). The exception is a weight
gradient of at most NARROW_GRAD values, a one-channel first layer's: OpenBLAS spreads that long,
thin product over its threads so badly that the pieces on one thread beat it (the keras net's
first conv: 4.69x). ``SMALL_PRODUCT = 0``, or ``SCRATCHCNN_SMALL_PRODUCTS=0`` in the
environment, leaves every product whole.
"""

from __future__ import annotations

import os

import numpy as np
from numpy.lib.stride_tricks import as_strided

# The most multiply-adds a piece may hold: OpenBLAS's limit for its small-matrix kernels.
SMALL_PRODUCT = int(os.environ.get("SCRATCHCNN_SMALL_PRODUCTS", "1000000"))
# A weight gradient (K, F) this small is cut on any number of BLAS threads (small-products.txt:
# 1.36x to 4.69x for K*F of 72 to 400 on two threads; 0.51x to 0.65x from 4,608 up).
NARROW_GRAD = 1024


def block_rows(k: int, f: int) -> int:
    """The rows of a piece of a product (rows, K) @ (K, F) that fits SMALL_PRODUCT (0: none)."""
    return SMALL_PRODUCT // (k * f) if SMALL_PRODUCT > 0 else 0


def _blocks(x: np.ndarray, rows: int) -> np.ndarray:
    """(..., M, K) with M a multiple of ``rows`` -> the view (..., M // rows, rows, K)."""
    *outer, m, k = x.shape
    *outer_strides, s_m, s_k = x.strides
    shape = (*outer, m // rows, rows, k)
    return as_strided(x, shape, (*outer_strides, rows * s_m, s_m, s_k))


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, one_thread: bool) -> np.ndarray:
    """``np.matmul(a, b, out=out)`` for a (M, K) or (S, M, K) and b (K, F) or (S, K, F), out
    (M, F) or (S, M, F), made in pieces of ``block_rows(K, F)`` rows where ``one_thread``."""
    m, k = a.shape[-2:]
    rows = block_rows(k, b.shape[-1])
    if not one_thread or not 0 < rows < m:
        return np.matmul(a, b, out=out)
    whole = m - m % rows
    stacked = b if b.ndim == 2 else b[..., None, :, :]  # (S, K, F) -> (S, 1, K, F)
    np.matmul(_blocks(a[..., :whole, :], rows), stacked, out=_blocks(out[..., :whole, :], rows))
    if whole < m:
        np.matmul(a[..., whole:, :], b, out=out[..., whole:, :])
    return out


def weight_grad(a: np.ndarray, g: np.ndarray, one_thread: bool) -> np.ndarray:
    """``a.T @ g`` for a (M, K) and g (M, F) -> (K, F): a conv's weight gradient from its patches
    and the gradient of its outputs, summed over pieces of ``block_rows(K, F)`` rows where
    ``one_thread``, or where K * F <= NARROW_GRAD."""
    m, k = a.shape
    rows = block_rows(k, g.shape[1])
    if not (one_thread or k * g.shape[1] <= NARROW_GRAD) or not 0 < rows < m:
        return a.T @ g
    whole = m - m % rows
    pieces = np.matmul(_blocks(a[:whole], rows).transpose(0, 2, 1), _blocks(g[:whole], rows))
    total = np.add.reduce(pieces, axis=0)  # (K, F)
    if whole < m:
        total += a[whole:].T @ g[whole:]
    return total
