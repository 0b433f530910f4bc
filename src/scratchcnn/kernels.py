"""Array kernels shared by the layers: im2col, col2im and window slices.

A convolution over an NHWC batch is a matrix product once every receptive field is laid out as
one row ("im2col"):

    x      (N, H, W, C)                        padded to (N, H + 2*ph, W + 2*pw, C)
    cols   (N * OH * OW, KH * KW * C)          row r = the KH x KW x C patch under output pixel r
    out    = cols @ W_mat                       W_mat (KH * KW * C, F)  ->  (N, OH, OW, F)

col2im is its adjoint: it scatters a (N * OH * OW, KH * KW * C) gradient back onto the input
grid, adding where windows overlap. Both are done with KH * KW strided slice operations, never a
loop over samples or pixels.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


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
) -> np.ndarray:
    """Lay out every receptive field of ``x`` as one row.

    x: (N, H, W, C)  ->  cols: (N, OH, OW, KH, KW, C), C-contiguous, so that
    ``cols.reshape(N * OH * OW, KH * KW * C)`` is a free view.
    """
    xp = pad_hw(x, padding)
    n, hp, wp, c = xp.shape
    kh, kw = kernel
    sh, sw = stride
    oh = (hp - kh) // sh + 1
    ow = (wp - kw) // sw + 1
    s_n, s_h, s_w, s_c = xp.strides
    windows = as_strided(
        xp,
        shape=(n, oh, ow, kh, kw, c),
        strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c),
        writeable=False,
    )
    return np.ascontiguousarray(windows)


def col2im(
    cols: np.ndarray,
    input_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> np.ndarray:
    """Adjoint of :func:`im2col`: sum each patch gradient back onto the input grid.

    cols: (N, OH, OW, KH, KW, C)  ->  (N, H, W, C)
    """
    n, h, w, c = input_shape
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    _, oh, ow = cols.shape[:3]
    grad = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=cols.dtype)
    for i in range(kh):
        rows = window_slice(i, oh, sh)
        for j in range(kw):
            grad[:, rows, window_slice(j, ow, sw), :] += cols[:, :, :, i, j, :]
    if ph or pw:
        grad = grad[:, ph : ph + h, pw : pw + w, :]
    return grad
