"""Element-wise and per-row activations: ReLU and Softmax.

ReLU:     y = max(0, x)                 dL/dx = dL/dy * [x > 0]
Softmax:  p_i = exp(x_i - m) / sum_j exp(x_j - m), with m = max_j x_j for stability
          dL/dx = p * (dL/dp - sum_j dL/dp_j * p_j)
"""

from __future__ import annotations

import numpy as np

from ..kernels import FRESH, Scratch
from .base import Layer, check_rank


class ReLU(Layer):
    """Rectified linear unit, any input shape; caches only its boolean mask ``x > 0``."""

    def __init__(self) -> None:
        super().__init__()
        self._mask: np.ndarray | None = None
        self._scratch = Scratch()  # the mask's memory, reused from step to step

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        mask = (self._scratch if training else FRESH).get("mask", x.shape, bool)
        np.greater(x, 0, out=mask)
        out = np.multiply(x, mask)  # the mask is reused by backward, so no np.maximum
        if training:
            self._mask = mask
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._mask is None:
            raise RuntimeError("ReLU.backward called without a training forward pass")
        mask, self._mask = self._mask, None
        return np.multiply(grad_out, mask)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a (N, K) array, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    exp /= exp.sum(axis=1, keepdims=True)
    return exp


class Softmax(Layer):
    """Class probabilities from logits: (N, K) -> (N, K), rows sum to 1.

    For training, prefer :class:`scratchcnn.losses.SoftmaxCrossEntropy` on the logits: it is
    the same function fused with the loss, with the simpler gradient ``(p - y) / N``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._probs: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        check_rank(x, 2, self, "(N, K)")
        probs = softmax(x)
        if training:
            self._probs = probs
        return probs

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._probs is None:
            raise RuntimeError("Softmax.backward called without a training forward pass")
        p = self._probs
        self._probs = None
        return p * (grad_out - (grad_out * p).sum(axis=1, keepdims=True))
