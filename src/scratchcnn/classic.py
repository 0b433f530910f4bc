"""``HandwrittenNumberClassification``: the classic from-scratch MNIST class, kept by name.

Many tutorials build one class with methods such as ``generate_feature_map`` and
``backprop_decision_making``. This class keeps those names for readers who come from them, but
every method delegates to the real layers of the ``seed`` architecture (conv 8 3x3, ReLU,
max-pool 2x2, flatten, dense 10, softmax): there is one copy of the math, in ``layers/``.

One training step, in the classic vocabulary::

    fmap   = net.generate_feature_map(images)          # conv          (N, 26, 26, 8)
    act    = net.relu(fmap)                            # ReLU
    pooled = net.generate_max_pool(act)                # 2x2 max-pool  (N, 13, 13, 8), mask kept
    flat   = net.generate_flattened_array(pooled)      # (N, 1352)
    probs  = net.softmax(flat @ net.W_dense.T + net.B_dense)
    loss   = net.compute_loss(probs, labels)
    g_flat = net.backprop_decision_making(flat, labels)   # dense grads, dL/dflat
    g_act  = net.unpool(g_flat)                        # through the binary mask
    g_w    = net.generate_kernal_loss(g_act)           # dL/dkernel
    ... then an SGD step with ``net.lr``
"""

from __future__ import annotations

import numpy as np

from .architectures import build
from .layers import Conv2D, softmax
from .losses import SoftmaxCrossEntropy
from .optim import SGD


class HandwrittenNumberClassification:
    """The ``seed`` network behind the classic method names. Images: (Batch, 28, 28[, 1])."""

    def __init__(self, lr: float = 0.05, seed: int | None = 0) -> None:
        self.model = build("seed", seed=seed)
        self.conv, self.relu_layer, self.pool, self.flatten, self.dense = self.model.layers
        self.loss_fn = SoftmaxCrossEntropy()
        self.lr = lr
        self.binary_max_pool: np.ndarray | None = None
        self.loss = float("nan")  # of the last backprop_decision_making call

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
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / np.float32(255.0)
        return images[..., None] if images.ndim == 3 else images

    # -- forward -----------------------------------------------------------------------------
    def generate_feature_map(
        self, images: np.ndarray, kernel: np.ndarray | None = None
    ) -> np.ndarray:
        """Convolve (Batch, H, W, Channels) with a (Filters, Channels_in, KH, KW) kernel.

        Without ``kernel`` this is the network's own conv layer (with its bias); with one, a
        stand-alone ``Conv2D`` holding that kernel and no bias.
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
        return self.relu_layer.forward(feature_map)

    def generate_max_pool(self, feature_map: np.ndarray) -> np.ndarray:
        """2x2 max-pool; the 0/1 mask of the winners is stored in ``self.binary_max_pool``."""
        pooled = self.pool.forward(feature_map)
        self.binary_max_pool = self.pool.binary_mask()
        return pooled

    def generate_flattened_array(self, pooled: np.ndarray) -> np.ndarray:
        return self.flatten.forward(pooled)

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits)

    def compute_loss(self, probabilities: np.ndarray, labels: np.ndarray) -> float:
        """Mean cross-entropy of predicted probabilities against integer labels."""
        # The log of a probability vector is its own log-softmax, so the fused loss applies.
        tiny = np.finfo(probabilities.dtype).tiny
        return SoftmaxCrossEntropy().forward(np.log(np.maximum(probabilities, tiny)), labels)

    def forward(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (Batch, 10) through the whole classic pipeline."""
        fmap = self.relu(self.generate_feature_map(images))
        flat = self.generate_flattened_array(self.generate_max_pool(fmap))
        return self.softmax(self.dense.forward(flat))

    # -- backward ----------------------------------------------------------------------------
    def backprop_decision_making(self, flattened: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Dense-layer gradients from the loss; returns dL/d(flattened array)."""
        logits = self.dense.forward(flattened)
        self.loss = self.loss_fn.forward(logits, labels)
        return self.dense.backward(self.loss_fn.backward())

    def unpool(self, grad_flattened: np.ndarray) -> np.ndarray:
        """Route the gradient back through the max-pool's binary mask: dL/d(ReLU output)."""
        return self.pool.backward(self.flatten.backward(grad_flattened))

    def generate_kernal_loss(self, grad_activation: np.ndarray) -> np.ndarray:
        """dL/dkernel (Filters, Channels_in, KH, KW) from the gradient after the ReLU."""
        self.conv.backward(self.relu_layer.backward(grad_activation))
        return self.conv.grads["weight"]

    # -- the classic loop --------------------------------------------------------------------
    def train(
        self, images: np.ndarray, labels: np.ndarray, epochs: int = 1, batch_size: int = 32
    ) -> list[float]:
        """Mini-batch SGD with ``self.lr``; returns the mean loss of each epoch."""
        images, labels = self._as_batch(images), np.asarray(labels)
        order_rng = np.random.default_rng(0)
        optimizer = SGD(self.model.parameters(), lr=self.lr)
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
                optimizer.lr = self.lr
                optimizer.step()
            history.append(total / len(images))
        return history

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted digit (Batch,) for each image."""
        return self.model.predict(self._as_batch(images))
