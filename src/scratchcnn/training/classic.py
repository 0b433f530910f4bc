"""``HandwrittenNumberClassification``: the classic from-scratch MNIST class of the seed project,
method by method.

Many tutorials build one class with methods such as ``generate_feature_map`` and
``backprop_decision_making``. This one follows that description literally, on the ``seed`` net
(conv 8 3x3, ReLU, 2x2 max-pool, flatten, dense 10, softmax): it keeps the binary mask of the
max-pool and unpools through it, computes the dense layer's gradients itself, and applies
``lr`` in ``sgd_step``. The convolution is the library's ``Conv2D`` (im2col + one matrix
product), and the tests check every gradient here against the layers' own.

One training step, in the classic vocabulary::

    fmap   = net.generate_feature_map(images)              # conv          (N, 26, 26, 8)
    act    = net.relu(fmap)                                # ReLU
    pooled = net.generate_max_pool(act)                    # 2x2 max-pool  (N, 13, 13, 8)
    flat   = net.generate_flattened_array(pooled)          # (N, 1352)
    g_flat = net.backprop_decision_making(flat, labels)    # dense: softmax, loss, dW, db, dL/dflat
    g_act  = net.unpool(g_flat)                            # through the binary mask
    g_k    = net.generate_kernal_loss(g_act)               # ReLU gradient, then dL/dkernel
    net.sgd_step()                                         # w -= lr * dL/dw, for every weight
"""

from __future__ import annotations

import numpy as np

from ..data.loading import to_batch
from ..nn import Conv2D, softmax
from .architectures import build


class HandwrittenNumberClassification:
    """The ``seed`` network behind the classic method names. Images: (Batch, 28, 28[, 1]),
    uint8 or floats in [0, 1]."""

    def __init__(self, lr: float = 0.05, seed: int | None = 0) -> None:
        self.model = build("seed", seed=seed)  # the same initial weights as the seed net
        self.conv, _, self.pool, _, self.dense = self.model.layers
        self.lr = lr
        self.binary_max_pool: np.ndarray | None = None  # 1 where a pool window's maximum was
        self.loss = float("nan")  # of the last backprop_decision_making call
        self.dW_dense: np.ndarray | None = None  # noqa: N815 - the classic names
        self.dB_dense: np.ndarray | None = None  # noqa: N815
        self._relu_input: np.ndarray | None = None
        self._pooled_shape: tuple[int, ...] | None = None

    # The classic attribute names, as views on the layers' own arrays.
    @property
    def kernel(self) -> np.ndarray:
        """Convolution kernel (Filters, Channels_in, KH, KW)."""
        return self.conv.params["weight"]

    @property
    def W_dense(self) -> np.ndarray:  # noqa: N802 - the classic name
        """Dense weights (10, 1352)."""
        return self.dense.params["weight"]

    @property
    def B_dense(self) -> np.ndarray:  # noqa: N802 - the classic name
        """Dense bias (10,)."""
        return self.dense.params["bias"]

    @staticmethod
    def _as_batch(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 4 and images.shape[-1] > 1:
            return images  # already a multi-channel batch
        return to_batch(images)  # pixels in [0, 1], no normalisation: the classic way

    # -- forward -----------------------------------------------------------------------------
    def generate_feature_map(
        self, images: np.ndarray, kernel: np.ndarray | None = None
    ) -> np.ndarray:
        """Convolve (Batch, H, W, Channels) with a (Filters, Channels_in, KH, KW) kernel.

        Without ``kernel`` this is the network's own conv layer (with its bias), remembered for
        the kernel gradient; with one, a stand-alone ``Conv2D`` holding that kernel, no bias.
        """
        images = self._as_batch(images)
        if kernel is None:
            return self.conv.forward(images)
        kernel = np.asarray(kernel)
        f, c, kh, kw = kernel.shape
        conv = Conv2D(c, f, (kh, kw), dtype=kernel.dtype)
        conv.params["weight"][...] = kernel
        conv.params["bias"][...] = 0
        return conv.forward(images.astype(kernel.dtype, copy=False), training=False)

    def relu(self, feature_map: np.ndarray) -> np.ndarray:
        """max(0, x), element by element (its input is kept for the ReLU gradient)."""
        self._relu_input = feature_map
        return np.maximum(feature_map, 0)

    def generate_max_pool(self, feature_map: np.ndarray) -> np.ndarray:
        """2x2 max-pool, stride 2. The binary mask of each window's maximum goes to
        ``self.binary_max_pool`` (the feature map's shape; ties go to the first maximum)."""
        pooled, winner = self.pool.max_and_winner(feature_map)
        self.binary_max_pool = self.pool.binary_mask(winner, feature_map.shape)
        return pooled

    def generate_flattened_array(self, pooled: np.ndarray) -> np.ndarray:
        """(Batch, H, W, C) -> (Batch, H*W*C), row-major."""
        self._pooled_shape = pooled.shape
        return pooled.reshape(len(pooled), -1)

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits)

    def compute_loss(self, probabilities: np.ndarray, labels: np.ndarray) -> float:
        """Mean cross-entropy: -mean(log p[label])."""
        picked = probabilities[np.arange(len(labels)), labels]
        return float(-np.log(np.maximum(picked, np.finfo(probabilities.dtype).tiny)).mean())

    def forward(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (Batch, 10) through the whole classic pipeline."""
        fmap = self.relu(self.generate_feature_map(images))
        flat = self.generate_flattened_array(self.generate_max_pool(fmap))
        return self.softmax(flat @ self.W_dense.T + self.B_dense)

    # -- backward ----------------------------------------------------------------------------
    def backprop_decision_making(self, flattened: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The dense layer and the loss, forward and back. With Z = flat @ W^T + B and
        P = softmax(Z): dL/dZ = (P - onehot(labels)) / N, then dW_dense = dZ^T @ flat,
        dB_dense = sum of dZ over the batch; returns dL/dflat = dZ @ W."""
        probs = self.softmax(flattened @ self.W_dense.T + self.B_dense)
        self.loss = self.compute_loss(probs, labels)
        onehot = np.zeros_like(probs)
        onehot[np.arange(len(labels)), labels] = 1
        grad_logits = (probs - onehot) / len(labels)
        self.dW_dense = grad_logits.T @ flattened
        self.dB_dense = grad_logits.sum(axis=0)
        return grad_logits @ self.W_dense

    def unpool(self, grad_flattened: np.ndarray) -> np.ndarray:
        """dL/d(pooled) spread over each 2x2 window, then kept only where the binary mask is
        1: the gradient of each window's maximum goes to the pixel that held it. Returns
        dL/d(ReLU output), the feature map's shape."""
        if self.binary_max_pool is None or self._pooled_shape is None:
            raise RuntimeError("unpool needs generate_max_pool and generate_flattened_array first")
        grad = grad_flattened.reshape(self._pooled_shape)
        ph, pw = self.pool.pool_size
        spread = np.repeat(np.repeat(grad, ph, axis=1), pw, axis=2)
        mask = self.binary_max_pool
        full = np.zeros(mask.shape, dtype=grad.dtype)  # a ragged edge's pixels get nothing
        full[:, : spread.shape[1], : spread.shape[2]] = spread
        return full * mask

    def generate_kernal_loss(self, grad_activation: np.ndarray) -> np.ndarray:
        """The ReLU gradient (1 where its input was positive, 0 elsewhere), then dL/dkernel
        (Filters, Channels_in, KH, KW) from the conv layer's input and that gradient."""
        if self._relu_input is None:
            raise RuntimeError("generate_kernal_loss needs relu first")
        grad_fmap = grad_activation * (self._relu_input > 0)
        self.conv.backward(grad_fmap)
        return self.conv.grads["weight"]

    def sgd_step(self) -> None:
        """w -= lr * dL/dw for the kernel, the conv bias and the dense weights and bias."""
        if self.dW_dense is None or not self.conv.grads:
            raise RuntimeError("sgd_step needs the gradients of a backward pass first")
        for value, grad in (
            (self.kernel, self.conv.grads["weight"]),
            (self.conv.params["bias"], self.conv.grads["bias"]),
            (self.W_dense, self.dW_dense),
            (self.B_dense, self.dB_dense),
        ):
            value -= (self.lr * grad).astype(value.dtype)

    # -- the classic loop --------------------------------------------------------------------
    def train(
        self, images: np.ndarray, labels: np.ndarray, epochs: int = 1, batch_size: int = 32
    ) -> list[float]:
        """Mini-batch SGD with ``self.lr``; returns the mean loss of each epoch."""
        images, labels = self._as_batch(images), np.asarray(labels)
        order_rng = np.random.default_rng(0)
        history = []
        for _ in range(epochs):
            order = order_rng.permutation(len(images))
            total = 0.0
            for start in range(0, len(images), batch_size):
                idx = order[start : start + batch_size]
                fmap = self.relu(self.generate_feature_map(images[idx]))
                flat = self.generate_flattened_array(self.generate_max_pool(fmap))
                grad_flat = self.backprop_decision_making(flat, labels[idx])
                total += self.loss * len(idx)
                self.generate_kernal_loss(self.unpool(grad_flat))
                self.sgd_step()
            history.append(total / len(images))
        return history

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted digit (Batch,) for each image (the same layers, run in inference mode)."""
        return self.model.predict(self._as_batch(images))
