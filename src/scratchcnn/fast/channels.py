"""Per-channel operations on channels-last arrays, faster than NumPy's broadcasting.

``x + bias`` with x (N, H, W, C) and bias (C,) makes NumPy run its inner loop over C values
only, once per pixel: slow for C = 8 or 32. ``channelwise`` tiles the vector along a whole
sample first, so the inner loop is a sample long. ``channel_sums`` adds up a tall (M, C) matrix
over its rows as a matrix-vector product, which BLAS does several times faster than
``matrix.sum(axis=0)``. Both give the plain expressions' values (summation order aside).
"""

from __future__ import annotations

import numpy as np


def channelwise(
    ufunc: np.ufunc, x: np.ndarray, vector: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """``ufunc(x, vector)`` for x (N, ..., C) and a per-channel vector (C,): x + bias, x - mean,
    x * scale. Written to ``out`` (a new array by default; may be ``x``) and returned."""
    n = len(x)
    rows = x.reshape(n, x.size // n if n else 0)
    out = np.empty_like(x) if out is None else out
    ufunc(rows, along_row(vector, rows.shape[1], x.dtype), out=out.reshape(rows.shape))
    return out


def along_row(vector: np.ndarray, size: int, dtype: np.dtype) -> np.ndarray:
    """A per-channel vector (C,) repeated along a channels-last row of ``size`` values (a
    whole sample), as ``dtype``: what ``channelwise`` applies, for callers that reuse it."""
    if size == vector.size:  # one pixel a row: the vector itself (np.tile would copy it)
        return vector.astype(dtype, copy=False)
    return np.tile(vector.astype(dtype, copy=False), size // max(vector.size, 1))


def channel_sums(matrix: np.ndarray) -> np.ndarray:
    """Column sums of a tall (M, C) matrix: ``matrix.sum(axis=0)`` as ones(M) @ matrix."""
    return np.ones(matrix.shape[0], dtype=matrix.dtype) @ matrix
