"""Flatten: (N, H, W, C) -> (N, H*W*C) in NHWC (row-major) order; backward reshapes back."""

from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from .base import Layer


class Flatten(Layer):
    """Keeps the batch axis, joins all others."""

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int]:
        return (math.prod(input_shape),)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim < 2:
            raise ShapeError(f"Flatten expects a batch (N, ...), got shape {np.shape(x)}")
        if training:
            self.save_for_backward(x.shape)
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        (input_shape,) = self.saved()
        return grad_out.reshape(input_shape)
