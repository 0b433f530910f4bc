"""im2col and col2im: a convolution as one matrix product. Read this file first.

A convolution slides a KH x KW x C kernel over the input. Lay every patch the kernel sees out as
one row ("im2col"), and the whole convolution is one matrix product:

    x      (N, H, W, C)                  zero-padded to (N, H + 2*PH, W + 2*PW, C)
    cols   (N, OH, OW, KH, KW, C)        cols[n, p, q] = the patch under output pixel (p, q)
           = (N*OH*OW, KH*KW*C)          as a matrix: one row per output pixel
    out    = cols @ W_mat                W_mat (KH*KW*C, F)  ->  (N*OH*OW, F) = (N, OH, OW, F)

with OH = (H + 2*PH - KH) // SH + 1 (and likewise OW). col2im is the adjoint of im2col: given
the gradient of every patch, it adds each one back onto the input pixels it was read from;
pixels that several patches overlap get the sum. It takes the patch gradients grouped by kernel
offset, (KH, KW, N, OH, OW, C): slab (i, j) holds, for every patch, the gradient of its value at
offset (i, j). That is the layout the backward pass makes for free, one product per kernel
offset (``layers/conv.py``), and each slab lands on the input with one slice-add that reads
contiguous values, where patch-major gradients (N, OH, OW, KH, KW, C) would be read C values at
a time.

Neither function loops over samples or pixels. im2col reads the patches through one strided
view of the padded input (no copy until the final one); col2im loops over the KH*KW kernel
offsets only, each a single vectorised slice-add.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """An int or a pair of ints -> a ``(height, width)`` pair."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value), int(value))
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (a, b)):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (int(a), int(b))


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Length of a sliding window's output along one axis (windows that would run past the
    padded edge are dropped, as in PyTorch)."""
    return (size + 2 * padding - kernel) // stride + 1


def window(offset: int, count: int, stride: int) -> slice:
    """The slice ``offset, offset + stride, ...`` of ``count`` positions: where kernel offset
    ``offset`` lands for each of ``count`` outputs."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def pad(x: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    """Zero-pad the two spatial axes of (N, H, W, C)."""
    ph, pw = padding
    return np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))) if ph or pw else x


def im2col(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> np.ndarray:
    """Every receptive field of ``x`` (N, H, W, C) as a row: (N, OH, OW, KH, KW, C), a new
    C-contiguous array, so ``cols.reshape(N * OH * OW, KH * KW * C)`` is free."""
    xp = pad(x, padding)
    n, hp, wp, c = xp.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    s_n, s_h, s_w, s_c = xp.strides
    # cols[n, p, q, i, j, c] = xp[n, p*SH + i, q*SW + j, c]: every index is linear in
    # (n, p, q, i, j, c), so a single strided view holds all the patches at once.
    patches = as_strided(
        xp,
        shape=(n, oh, ow, kh, kw, c),
        strides=(s_n, sh * s_h, sw * s_w, s_h, s_w, s_c),
        writeable=False,
    )
    return np.ascontiguousarray(patches)


def col2im(
    slabs: np.ndarray,
    input_shape: tuple[int, int, int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> np.ndarray:
    """The adjoint of :func:`im2col`: slabs (KH, KW, N, OH, OW, C), slab (i, j) the gradient
    of kernel offset (i, j) of every patch, summed back onto the input grid -> (N, H, W, C)."""
    n, h, w, c = input_shape
    (sh, sw), (ph, pw) = stride, padding
    kh, kw, _, oh, ow, _ = slabs.shape
    grad = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=slabs.dtype)
    for i in range(kh):  # kernel offset (i, j) of every patch lands on one strided slice
        for j in range(kw):
            grad[:, window(i, oh, sh), window(j, ow, sw), :] += slabs[i, j]
    return grad[:, ph : ph + h, pw : pw + w, :]
