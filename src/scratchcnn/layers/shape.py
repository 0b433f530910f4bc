"""Flatten: (N, H, W, C) -> (N, H*W*C) in NHWC (row-major) order; backward reshapes back."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError
from .base import Layer


class Flatten(Layer):
    """Keeps the batch axis, joins all others."""

    def __init__(self) -> None:
        super().__init__()
        self._input_shape: tuple[int, ...] | None = None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int]:
        return (math.prod(input_shape),)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.ndim < 2:
            raise ShapeError(f"Flatten expects a batch (N, ...), got shape {tuple(x.shape)}")
        if training:
            self._input_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._input_shape is None:
            raise RuntimeError("Flatten.backward called without a training forward pass")
        return grad_out.reshape(self._input_shape)
