"""Inverted dropout: in training, zero each value with probability p and scale the rest by
1 / (1 - p), so that inference (which does nothing) sees the same expected activation.

Forward:  y = x * m,  m = [u >= p] / (1 - p),  u ~ U(0, 1)      Backward: dL/dx = dL/dy * m
"""

from __future__ import annotations

import numpy as np

from .base import Layer


class Dropout(Layer):
    """``Dropout(p)``; draws its masks from ``self.rng`` (the model shares its own seeded one)."""

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = rng if rng is not None else np.random.default_rng()
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if not training:
            return x
        if self.p == 0.0:
            self._mask = None
            return x
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        keep = self.rng.random(x.shape, dtype=dtype) >= self.p
        self._mask = keep * dtype.type(1.0 / (1.0 - self.p))
        return x * self._mask

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._mask is None:
            return grad_out
        grad = grad_out * self._mask
        self._mask = None
        return grad

    def __repr__(self) -> str:
        return f"Dropout({self.p})"
