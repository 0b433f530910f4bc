"""Max pooling over NHWC batches, with the binary mask of the winners for unpooling.

Forward: each output pixel is the maximum of a PH x PW window stepped by the stride
(windows may overlap when stride < pool size; a ragged edge is dropped, as in PyTorch).
We visit the PH*PW window offsets in row-major order and keep, per output pixel, the index of
the first offset that holds the maximum: ties go to the first maximum, like PyTorch.

Backward (unpooling): the gradient of each output pixel goes to exactly that one input
position; everything else gets zero. Where windows overlap, contributions add up.
"""

from __future__ import annotations

from itertools import product

import numpy as np

from ..errors import ShapeError
from ..kernels import output_size, pair, window_slice
from .base import Layer, check_rank


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
        self._cache: tuple[np.ndarray, tuple[int, ...]] | None = None

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
        oh, ow, _ = self.output_shape(x.shape[1:])
        offsets = self._offsets()
        best = self._window(x, 0, 0, oh, ow).copy()
        winner = np.zeros(best.shape, dtype=np.uint8 if len(offsets) < 256 else np.int32)
        for k, (i, j) in enumerate(offsets[1:], start=1):
            window = self._window(x, i, j, oh, ow)
            better = window > best  # strict: an equal later value never takes over
            np.copyto(best, window, where=better)
            winner[better] = k
        self._cache = (winner, x.shape) if training else None
        return best

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("MaxPool2D.backward called without a training forward pass")
        winner, input_shape = self._cache
        self._cache = None
        oh, ow = winner.shape[1:3]
        (ph, pw), (sh, sw) = self.pool_size, self.stride
        tiles_exactly = (sh, sw) == (ph, pw) and input_shape[1:3] == (oh * ph, ow * pw)
        grad = (np.empty if tiles_exactly else np.zeros)(input_shape, dtype=grad_out.dtype)
        overlapping = sh < ph or sw < pw
        for k, (i, j) in enumerate(self._offsets()):
            target = self._window(grad, i, j, oh, ow)
            routed = np.multiply(grad_out, winner == k, dtype=grad_out.dtype)
            if overlapping:
                target += routed
            else:
                target[...] = routed
        return grad

    def binary_mask(self) -> np.ndarray:
        """The cached winners as a 0/1 array of the input's shape (one 1 per window)."""
        if self._cache is None:
            raise RuntimeError("MaxPool2D.binary_mask needs a training forward pass first")
        winner, input_shape = self._cache
        oh, ow = winner.shape[1:3]
        mask = np.zeros(input_shape, dtype=np.uint8)
        for k, (i, j) in enumerate(self._offsets()):
            self._window(mask, i, j, oh, ow)[...] |= winner == k
        return mask

    def __repr__(self) -> str:
        p, s = self.pool_size, self.stride
        size = p[0] if p[0] == p[1] else p
        extra = "" if s == p else f", stride={s[0] if s[0] == s[1] else s}"
        return f"MaxPool2D({size}{extra})"
