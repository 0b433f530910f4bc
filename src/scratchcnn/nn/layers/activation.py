"""Activations: ReLU, element-wise, and Softmax, per row.

ReLU:     y = max(0, x)                 dL/dx = dL/dy * [x > 0]
Softmax:  p_i = exp(x_i - m) / sum_j exp(x_j - m), with m = max_j x_j so exp never overflows
          dL/dx = p * (dL/dp - sum_j dL/dp_j * p_j)
"""

from __future__ import annotations

import numpy as np

from .base import Layer, check_rank


class ReLU(Layer):
    """Rectified linear unit, any input shape; caches only its boolean mask ``x > 0``."""

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        mask = x > 0
        if training:
            self.save_for_backward(mask)
        return x * mask

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        (mask,) = self.saved()
        return grad_out * mask


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a (N, K) array, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class Softmax(Layer):
    """Class probabilities from logits: (N, K) -> (N, K), rows sum to 1.

    For training, prefer :class:`scratchcnn.nn.SoftmaxCrossEntropy` on the logits: it is the
    same function fused with the loss, with the simpler gradient ``(p - y) / N``.
    """

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        check_rank(x, 2, self, "(N, K)")
        probs = softmax(x)
        if training:
            self.save_for_backward(probs)
        return probs

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        (p,) = self.saved()
        return p * (grad_out - (grad_out * p).sum(axis=1, keepdims=True))
