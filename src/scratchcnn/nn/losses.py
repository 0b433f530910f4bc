"""Softmax + cross-entropy on logits, fused for stability and a simple gradient.

For logits z (N, K) and integer labels y (N,), with smoothing eps the target distribution is
q = (1 - eps) * onehot(y) + eps / K. Then

    log p_k = z_k - logsumexp(z)           (log-sum-exp: shift by max z, never overflows)
    L       = -(1/N) sum_n sum_k q_nk log p_nk
    dL/dz   = (p - q) / N
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError


class SoftmaxCrossEntropy:
    """``SoftmaxCrossEntropy(label_smoothing=0.0)``: ``forward(logits, labels) -> loss``,
    ``backward() -> dL/dlogits``. Also keeps the probabilities of the last call in ``probs``.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.probs: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        if logits.ndim != 2:
            raise ShapeError(f"loss expects logits (N, K), got shape {tuple(logits.shape)}")
        labels = np.asarray(labels)
        n, k = logits.shape
        if labels.shape != (n,):
            raise ShapeError(f"loss expects {n} integer labels, got shape {tuple(labels.shape)}")
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise ShapeError(f"labels must lie in [0, {k}), got {labels.min()}..{labels.max()}")
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_probs = shifted - log_norm
        eps = self.label_smoothing
        picked = log_probs[np.arange(n), labels]
        loss = -((1.0 - eps) * picked + eps * log_probs.mean(axis=1))
        self.probs = np.exp(log_probs)
        self._labels = labels
        return float(loss.mean())

    def backward(self) -> np.ndarray:
        if self.probs is None or self._labels is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward called before forward")
        n, k = self.probs.shape
        grad = self.probs.copy()
        eps = self.label_smoothing
        if eps:
            grad -= eps / k
        grad[np.arange(n), self._labels] -= 1.0 - eps
        grad /= n
        return grad

    __call__ = forward
