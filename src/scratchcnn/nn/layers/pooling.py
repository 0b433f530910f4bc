"""Max pooling over NHWC batches, and unpooling through the winners' binary mask.

Forward: output pixel (p, q) is the maximum of the PH x PW window at (p*SH, q*SW). Seen from the
window's side, window offset (i, j) of every output pixel is one strided view of the input,
x[:, i::SH, j::SW, :], of the output's shape. So pooling is an element-wise maximum over the
PH*PW views, with no loop over pixels. Windows may overlap (stride < pool size); windows that
would run past the edge are dropped, as in PyTorch.

The winner of a window is the offset k that holds its maximum; ties go to the first maximum in
row-major window order, as in PyTorch (``first_maximum``, the library's one tie rule). The
binary mask has a 1 on each window's winning input pixel and 0 elsewhere.

Backward (unpooling): each output pixel's gradient goes to its window's winner and nowhere
else:   dL/dx[window k] += dL/dy * [winner == k]   for each offset k
(where windows overlap, a pixel that wins several of them gets the sum).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import product
from typing import Any

import numpy as np

from ...errors import ShapeError
from ..im2col import output_size, pair, window
from .base import Layer, check_rank


def winner_dtype(offsets: int) -> np.dtype:
    """The smallest unsigned integer type that numbers ``offsets`` window offsets."""
    return np.min_scalar_type(max(offsets - 1, 0))


def first_maximum(
    candidates: Iterable[np.ndarray],
    best: np.ndarray,
    winner: np.ndarray,
    beat: np.ndarray | None = None,
) -> None:
    """Fold ``candidates`` (a window's values at offset 0, 1, ..., each of ``best``'s shape) into
    their element-wise maximum ``best`` and the index of the first candidate that holds it,
    ``winner`` (both written in place). Ties go to the first maximum: a later candidate wins
    only if it is strictly greater. ``beat``: optional scratch memory like ``winner``."""
    candidates = iter(candidates)
    first = next(candidates)
    if first is not best:  # a caller may have computed the first candidate in place
        np.copyto(best, first)
    winner[...] = 0
    beat = np.empty_like(winner) if beat is None else beat
    for k, candidate in enumerate(candidates, start=1):
        np.greater(candidate, best, out=beat)  # 1 where offset k beats offsets 0..k-1
        # The offsets come in increasing order, so "winner = k where beat" is
        # max(winner, k * beat): two dense passes, far faster than a masked assignment.
        np.multiply(beat, k, out=beat)
        np.maximum(winner, beat, out=winner)
        np.maximum(best, candidate, out=best)


class MaxPool2D(Layer):
    """``MaxPool2D(pool_size=2, stride=None)``; the stride defaults to the pool size.

    Input (N, H, W, C) -> output (N, OH, OW, C), ``OH = (H - PH) // stride + 1``.
    """

    def __init__(
        self, pool_size: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        self.pool_size = pair(pool_size, "pool_size")
        self.stride = self.pool_size if stride is None else pair(stride, "stride")
        if min(self.pool_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"MaxPool2D: pool_size and stride must be >= 1, got {self!r}")

    def config(self) -> dict[str, Any]:
        return {"pool_size": list(self.pool_size), "stride": list(self.stride)}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
        if len(input_shape) != 3:
            raise ShapeError(f"{self!r} expects per-sample shape (H, W, C), got {input_shape}")
        h, w, c = input_shape
        (ph, pw), (sh, sw) = self.pool_size, self.stride
        if ph > h or pw > w:
            raise ShapeError(f"{self!r}: pool window {ph}x{pw} is larger than the input {h}x{w}")
        return (output_size(h, ph, sh, 0), output_size(w, pw, sw, 0), c)

    def offsets(self) -> list[tuple[int, int]]:
        """The window offsets (i, j) in row-major order: offset k is ``offsets()[k]``."""
        return list(product(range(self.pool_size[0]), range(self.pool_size[1])))

    def window_view(self, array: np.ndarray, i: int, j: int, out_hw: tuple[int, int]):
        """The (N, OH, OW, C) view of ``array`` (N, H, W, C) at window offset (i, j)."""
        (oh, ow), (sh, sw) = out_hw, self.stride
        return array[:, window(i, oh, sh), window(j, ow, sw), :]

    def max_and_winner(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pooled maximum (N, OH, OW, C) of ``x`` and each window's winning offset k."""
        check_rank(x, 4, self, "(N, H, W, C)")
        oh, ow, c = self.output_shape(x.shape[1:])
        offsets = self.offsets()
        best = np.empty((x.shape[0], oh, ow, c), dtype=x.dtype)
        winner = np.empty(best.shape, dtype=winner_dtype(len(offsets)))
        first_maximum((self.window_view(x, i, j, (oh, ow)) for i, j in offsets), best, winner)
        return best, winner

    def binary_mask(self, winner: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
        """0/1 array of the input's shape: 1 on each window's winning pixel."""
        mask = np.zeros(input_shape, dtype=np.uint8)
        for k, (i, j) in enumerate(self.offsets()):
            self.window_view(mask, i, j, winner.shape[1:3])[...] |= winner == k
        return mask

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        best, winner = self.max_and_winner(x)
        if training:
            self.save_for_backward(winner, x.shape)
        return best

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        winner, input_shape = self.saved()
        grad = np.zeros(input_shape, dtype=grad_out.dtype)
        overlapping = self.stride[0] < self.pool_size[0] or self.stride[1] < self.pool_size[1]
        for k, (i, j) in enumerate(self.offsets()):
            view = self.window_view(grad, i, j, winner.shape[1:3])
            if overlapping:  # a pixel in several windows gets the sum of what it won
                view += grad_out * (winner == k)
            else:  # each pixel is in one window at most: write its share straight in
                np.multiply(grad_out, winner == k, out=view)
        return grad

    def __repr__(self) -> str:
        p, s = self.pool_size, self.stride
        size = p[0] if p[0] == p[1] else p
        extra = "" if s == p else f", stride={s[0] if s[0] == s[1] else s}"
        return f"MaxPool2D({size}{extra})"
