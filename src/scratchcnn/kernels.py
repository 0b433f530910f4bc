"""Array kernels shared by the layers: im2col, col2im, window slices, per-channel operations,
and ``Scratch``, the buffers a layer reuses between training steps.

A convolution over an NHWC batch is a matrix product once every receptive field is laid out as
one row ("im2col"):

    x      (N, H, W, C)                        padded to (N, H + 2*ph, W + 2*pw, C)
    cols   (N * OH * OW, KH * KW * C)          row r = the KH x KW x C patch under output pixel r
    out    = cols @ W_mat                       W_mat (KH * KW * C, F)  ->  (N, OH, OW, F)

col2im is its adjoint: it scatters patch gradients back onto the input grid, adding where
windows overlap. It takes them offset-major, (KH, KW, N, OH, OW, C), so that each of its KH * KW
slice-adds reads one contiguous slab (a layout the convolution's backward GEMM produces for
free). Neither kernel loops over samples or pixels.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


class Scratch:
    """Named arrays that a layer reuses from one training step to the next.

    A fresh array of a few megabytes is not free: the C allocator maps new pages for it and
    each 4 KiB page faults on its first touch. On these machines that cost 20-40% of a
    training step. ``get(name, shape, dtype)`` hands back the array it gave out last time
    under that name when shape and dtype match (the memory is already mapped), else a new
    one. Only for arrays that never leave the layer and are dead by the time the same name is
    asked for again.
    """

    def __init__(self, reuse: bool = True) -> None:
        self.reuse = reuse
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        if not self.reuse:
            return np.empty(shape, dtype)
        array = self._arrays.get(name)
        if array is None or array.shape != tuple(shape) or array.dtype != dtype:
            array = self._arrays[name] = np.empty(shape, dtype)
        return array


FRESH = Scratch(reuse=False)  # for inference and one-off calls: a new array every time


def pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Turn an int or a pair into a validated ``(height, width)`` pair."""
    if isinstance(value, (int, np.integer)):
        result = (int(value), int(value))
    else:
        try:
            a, b = value
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
        result = (int(a), int(b))
    return result


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Spatial output length of a sliding window (floor mode, as PyTorch)."""
    return (size + 2 * padding - kernel) // stride + 1


def window_slice(offset: int, count: int, stride: int) -> slice:
    """The slice that picks ``count`` positions ``offset, offset+stride, ...``."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def pad_hw(x: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    """Zero-pad the two spatial axes of an NHWC array (no copy when there is no padding)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, h, w, c = x.shape
    padded = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
    padded[:, ph : ph + h, pw : pw + w, :] = x
    return padded


def im2col(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    offset_major: bool = False,
    pool: tuple[int, int] = (1, 1),
    scratch: Scratch | None = None,
) -> np.ndarray:
    """Lay out every receptive field of ``x`` as one row.

    x: (N, H, W, C)  ->  cols: (N, OH, OW, KH, KW, C), C-contiguous, so that
    ``cols.reshape(N * OH * OW, KH * KW * C)`` is a free view.

    With ``offset_major`` the layout is (KH, KW, N, OH, OW, C) instead: KH*KW copies of long
    contiguous runs rather than one copy of runs only KH*KW*C long. For one input channel
    (C = 1) that is the transposed patch matrix, ``cols.reshape(KH * KW, N * OH * OW)``, and
    much cheaper to build.

    ``pool = (PH, PW)`` orders the output pixels for a PH x PW max-pool (stride = size) that
    follows the convolution: (PH, PW, N, QH, QW) with QH = OH // PH, QW = OW // PW, where
    (pi, pj, n, q, r) is output pixel (n, q*PH + pi, r*PW + pj). Each window offset (pi, pj) is
    then one contiguous block of rows, and the pixels a ragged pool edge would drop are never
    gathered. The default (1, 1) is the plain (N, OH, OW) order.

    ``scratch``: where to take the result's memory from (see :class:`Scratch`).
    """
    xp = pad_hw(x, padding)
    n, hp, wp, c = xp.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pool
    qh = ((hp - kh) // sh + 1) // ph
    qw = ((wp - kw) // sw + 1) // pw
    s_n, s_h, s_w, s_c = xp.strides
    # Output pixel (pi, pj, n, q, r) reads x[n, (q*PH + pi)*sh + i, (r*PW + pj)*sw + j, c]
    # for kernel offset (i, j): every index is linear, so one strided view holds them all.
    pixels = [(ph, sh * s_h), (pw, sw * s_w), (n, s_n), (qh, ph * sh * s_h), (qw, pw * sw * s_w)]
    offsets = [(kh, s_h), (kw, s_w)]
    channel = [(c, s_c)]
    layout = offsets + pixels + channel if offset_major else pixels + offsets + channel
    shape, strides = zip(*layout, strict=True)
    windows = as_strided(xp, shape=shape, strides=strides, writeable=False)
    cols = (scratch or FRESH).get("im2col", shape, x.dtype)
    np.copyto(cols, windows)
    if ph == pw == 1:  # drop the two unit pool axes: the documented plain layouts
        unit_axes = 2 if offset_major else 0
        cols = cols.reshape(shape[:unit_axes] + shape[unit_axes + 2 :])
    return cols


def col2im(
    cols: np.ndarray,
    input_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> np.ndarray:
    """Adjoint of :func:`im2col`: sum each patch gradient back onto the input grid.

    slabs: (KH, KW, N, OH, OW, C) - slab (i, j) holds the gradient of the input pixel at
    offset (i, j) of every patch  ->  (N, H, W, C)
    """
    n, h, w, c = input_shape
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    oh, ow = cols.shape[3:5]
    grad = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=cols.dtype)
    for i in range(kh):
        rows = window_slice(i, oh, sh)
        for j in range(kw):
            grad[:, rows, window_slice(j, ow, sw), :] += cols[i, j]
    if ph or pw:
        grad = grad[:, ph : ph + h, pw : pw + w, :]
    return grad


def channelwise(
    ufunc: np.ufunc, x: np.ndarray, vector: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """``ufunc(x, vector)`` for a per-channel ``vector`` (C,) and ``x`` (N, ..., C) with
    channels last: x + bias, x - mean, x * scale. Written to ``out`` (a new array by default;
    may be ``x``) and returned.

    The vector is tiled along a whole sample first, so NumPy's inner loop runs over a sample
    rather than over C values: several times faster for 8 or 32 channels.
    """
    n = len(x)
    rows = x.reshape(n, x.size // n if n else 0)
    out = np.empty_like(x) if out is None else out
    out_rows = out.reshape(rows.shape)
    tiled = np.tile(vector.astype(x.dtype, copy=False), rows.shape[1] // max(vector.size, 1))
    ufunc(rows, tiled, out=out_rows)
    return out


def column_sums(matrix: np.ndarray) -> np.ndarray:
    """Sum a tall (M, F) matrix over its rows as a matrix-vector product: for the bias
    gradients, BLAS does this several times faster than ``matrix.sum(axis=0)``."""
    return np.ones(matrix.shape[0], dtype=matrix.dtype) @ matrix
