"""Inverted dropout: in training, zero each value with probability p and scale the rest by
1 / (1 - p), so that inference (which does nothing) sees the same expected activation.

Forward:  y = x * m,  m = [u >= p] / (1 - p),  u ~ U(0, 1)      Backward: dL/dx = dL/dy * m
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Layer


def dropout_mask(uniforms: np.ndarray, p: float) -> np.ndarray:
    """The scaled keep-mask [u >= p] / (1 - p) for uniforms u in [0, 1)."""
    return (uniforms >= p) * uniforms.dtype.type(1.0 / (1.0 - p))


class Dropout(Layer):
    """``Dropout(p)``; draws its uniforms from ``self.rng`` (Sequential gives every Dropout
    the model's own seeded generator, so a seed fixes the masks too)."""

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = rng if rng is not None else np.random.default_rng()

    def config(self) -> dict[str, Any]:
        return {"p": self.p}

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if not training:
            return x
        if self.p == 0.0:
            self.save_for_backward(None)
            return x
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        mask = dropout_mask(self.rng.random(x.shape, dtype=dtype), self.p)
        self.save_for_backward(mask)
        return x * mask

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        (mask,) = self.saved()
        return grad_out if mask is None else grad_out * mask

    def __repr__(self) -> str:
        return f"Dropout({self.p})"
