"""Max pooling over NHWC batches, with the binary mask of the winners for unpooling.

Forward: each output pixel is the maximum of a PH x PW window stepped by the stride
(windows may overlap when stride < pool size; a ragged edge is dropped, as in PyTorch). It is
computed as an element-wise maximum over the PH*PW strided views "input at window offset
(i, j)", each of the output's shape: no loop over pixels.

Backward (unpooling): the binary mask marks, in each window, the first position (row-major)
that holds the maximum - ties go to the first maximum, like PyTorch - and the gradient of each
output pixel goes to exactly that position; everything else gets zero. Where windows overlap,
contributions add up.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import product

import numpy as np

from ..errors import ShapeError
from ..kernels import output_size, pair, window_slice
from .base import Layer, check_rank


def first_maximum_hits(
    candidates: Iterable[np.ndarray], best: np.ndarray, count: int
) -> Iterator[np.ndarray]:
    """Yield, for each of the ``count`` candidates (the window's values at one offset, in
    row-major offset order, each of ``best``'s shape), the boolean mask of the output pixels
    whose first maximum is there. Every pixel is marked exactly once over all candidates."""
    unclaimed = None  # output pixels whose winner is still to be found
    for k, candidate in enumerate(candidates):
        if k == count - 1 and unclaimed is not None:
            yield unclaimed  # every window has a maximum somewhere: it is here
            return
        hit = candidate == best
        if unclaimed is None:
            unclaimed = ~hit
        else:
            hit &= unclaimed  # an earlier offset already won this tie
            unclaimed ^= hit
        yield hit


class MaxPool2D(Layer):
    """``MaxPool2D(pool_size=2, stride=None)``; stride defaults to the pool size.

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
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
        if len(input_shape) != 3:
            raise ShapeError(f"{self!r} expects per-sample shape (H, W, C), got {input_shape}")
        h, w, c = input_shape
        (ph, pw), (sh, sw) = self.pool_size, self.stride
        if ph > h or pw > w:
            raise ShapeError(f"{self!r}: pool window {ph}x{pw} is larger than the input {h}x{w}")
        return (output_size(h, ph, sh, 0), output_size(w, pw, sw, 0), c)

    def _offsets(self) -> list[tuple[int, int]]:
        return list(product(range(self.pool_size[0]), range(self.pool_size[1])))

    def _window(self, array: np.ndarray, i: int, j: int, oh: int, ow: int) -> np.ndarray:
        """The (N, OH, OW, C) view of ``array`` at window offset (i, j)."""
        rows = window_slice(i, oh, self.stride[0])
        cols = window_slice(j, ow, self.stride[1])
        return array[:, rows, cols, :]

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        check_rank(x, 4, self, "(N, H, W, C)")
        oh, ow, c = self.output_shape(x.shape[1:])
        windows = [self._window(x, i, j, oh, ow) for i, j in self._offsets()]
        best = windows[0].copy()
        for window in windows[1:]:
            np.maximum(best, window, out=best)
        # Caching the input (a reference, not a copy) and the output is enough to find the
        # winners again in backward; that keeps inference and the forward pass lean.
        if training:
            self._cache = (x, best)
        return best

    def _winners(self, x: np.ndarray, best: np.ndarray):
        """Yield ``((i, j), hit)`` for every window offset, as :func:`first_maximum_hits`."""
        oh, ow = best.shape[1:3]
        offsets = self._offsets()
        windows = (self._window(x, i, j, oh, ow) for i, j in offsets)
        yield from zip(offsets, first_maximum_hits(windows, best, len(offsets)), strict=True)

    def _cached(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None:
            raise RuntimeError(f"MaxPool2D.{what} needs a training forward pass first")
        return self._cache

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x, best = self._cached("backward")
        self._cache = None
        oh, ow = best.shape[1:3]
        (ph, pw), (sh, sw) = self.pool_size, self.stride
        overlapping = sh < ph or sw < pw
        tiles_exactly = (sh, sw) == (ph, pw) and x.shape[1:3] == (oh * ph, ow * pw)
        # every input pixel is in exactly one window when the windows tile it: all get written
        make = np.empty if tiles_exactly else np.zeros
        grad = make(x.shape, dtype=grad_out.dtype)
        for (i, j), hit in self._winners(x, best):
            target = self._window(grad, i, j, oh, ow)
            if overlapping:
                target += grad_out * hit
            else:
                np.multiply(grad_out, hit, out=target)
        return grad

    def binary_mask(self) -> np.ndarray:
        """The winners as a 0/1 array of the input's shape (one 1 per window)."""
        x, best = self._cached("binary_mask")
        oh, ow = best.shape[1:3]
        mask = np.zeros(x.shape, dtype=np.uint8)
        for (i, j), hit in self._winners(x, best):
            self._window(mask, i, j, oh, ow)[...] |= hit
        return mask

    def __repr__(self) -> str:
        p, s = self.pool_size, self.stride
        size = p[0] if p[0] == p[1] else p
        extra = "" if s == p else f", stride={s[0] if s[0] == s[1] else s}"
        return f"MaxPool2D({size}{extra})"
