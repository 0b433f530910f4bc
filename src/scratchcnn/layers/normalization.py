"""Batch normalisation over the channel axis (the last axis, NHWC or (N, features)).

Training, with statistics over every axis but the channel one (M values per channel):

    mu = mean(x),  var = mean((x - mu)^2),  xhat = (x - mu) / sqrt(var + eps)
    y  = gamma * xhat + beta
    running_mean <- (1 - m) running_mean + m mu
    running_var  <- (1 - m) running_var + m var * M / (M - 1)

Inference uses the running statistics instead (as PyTorch, with the unbiased variance).
Backward, with G = dL/dy:

    dL/dbeta  = sum G,   dL/dgamma = sum G * xhat
    dL/dx     = gamma / sqrt(var + eps) * (G - mean(G) - xhat * mean(G * xhat))
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..kernels import Scratch, channelwise, column_sums
from .base import Layer


class _BatchNorm(Layer):
    rank = 0  # per-sample rank the subclass expects

    def __init__(
        self,
        num_features: int,
        momentum: float = 0.1,
        eps: float = 1e-5,
        dtype: type | np.dtype = np.float32,
    ) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.momentum, self.eps = float(momentum), float(eps)
        self.params = {
            "weight": np.ones(self.num_features, dtype=dtype),
            "bias": np.zeros(self.num_features, dtype=dtype),
        }
        self.buffers = {
            "running_mean": np.zeros(self.num_features, dtype=dtype),
            "running_var": np.ones(self.num_features, dtype=dtype),
        }
        self._cache: tuple[np.ndarray, np.ndarray, int] | None = None
        self._scratch = Scratch()  # training temporaries, reused from step to step
        # Set on the copies that each run one part of a split batch (see parallel.py): sums
        # over the batch then go through sync.total(), and only sync.leader updates the
        # running statistics, which the copies share.
        self.sync = None

    def _whole_batch(self, sums: np.ndarray) -> np.ndarray:
        """Per-channel sums over this part of the batch -> over the whole batch."""
        return sums if self.sync is None else self.sync.total(sums)

    def reset_parameters(self, rng: np.random.Generator, relu_gain: bool = True) -> None:
        self.params["weight"][...] = 1.0
        self.params["bias"][...] = 0.0
        self.buffers["running_mean"][...] = 0.0
        self.buffers["running_var"][...] = 1.0

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != self.rank or input_shape[-1] != self.num_features:
            raise ShapeError(
                f"{self!r} expects per-sample shape {self._layout} with "
                f"{self.num_features} channels last, got {tuple(input_shape)}"
            )
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.ndim != self.rank + 1:
            raise ShapeError(f"{self!r} expects a batch (N, {self._layout[1:]}, got {x.shape}")
        self.output_shape(x.shape[1:])
        x = x.astype(self.dtype, copy=False)
        flat = x.reshape(-1, self.num_features)
        gamma, beta = self.params["weight"], self.params["bias"]
        if not training:
            scale = gamma / np.sqrt(self.buffers["running_var"] + self.eps)
            out = channelwise(np.multiply, x, scale)
            return channelwise(np.add, out, beta - self.buffers["running_mean"] * scale, out=out)
        sums_and_count = self._whole_batch(np.append(column_sums(flat), flat.shape[0]))
        count = int(sums_and_count[-1])
        mean = (sums_and_count[:-1] / count).astype(x.dtype)
        # Two passes for the variance (mean first, then squared deviations): one pass with
        # E[x^2] - mean^2 loses float32 digits when |mean| is large against the spread.
        xhat = channelwise(np.subtract, x, mean, out=self._scratch.get("xhat", x.shape, x.dtype))
        flat_hat = xhat.reshape(-1, self.num_features)
        var = self._whole_batch(np.einsum("ij,ij->j", flat_hat, flat_hat)) / count
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        channelwise(np.multiply, xhat, inv_std, out=xhat)
        if self.sync is None or self.sync.leader:
            m = self.momentum
            unbiased = var * (count / max(count - 1, 1))
            running_mean, running_var = self.buffers["running_mean"], self.buffers["running_var"]
            self.buffers["running_mean"] = ((1 - m) * running_mean + m * mean).astype(self.dtype)
            self.buffers["running_var"] = ((1 - m) * running_var + m * unbiased).astype(self.dtype)
        self._cache = (xhat, inv_std, count)
        out = channelwise(np.multiply, xhat, gamma)
        return channelwise(np.add, out, beta, out=out)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError(f"{self!r}.backward called without a training forward pass")
        xhat, inv_std, count = self._cache
        self._cache = None
        g = np.ascontiguousarray(grad_out, dtype=xhat.dtype)
        flat_g, flat_hat = g.reshape(-1, self.num_features), xhat.reshape(-1, self.num_features)
        grad_beta = column_sums(flat_g)
        grad_gamma = np.einsum("ij,ij->j", flat_g, flat_hat)
        self.grads = {"weight": grad_gamma, "bias": grad_beta}  # of this part, if split
        sum_g, sum_g_hat = np.split(self._whole_batch(np.concatenate([grad_beta, grad_gamma])), 2)
        scale = self.params["weight"] * inv_std
        # scale * (G - mean(G)) - xhat * scale * mean(G * xhat), in whole-sample passes
        grad = channelwise(np.subtract, g, sum_g / count)
        channelwise(np.multiply, grad, scale, out=grad)
        correction = channelwise(
            np.multiply,
            xhat,
            scale * sum_g_hat / count,
            out=self._scratch.get("tmp", g.shape, g.dtype),
        )
        np.subtract(grad, correction, out=grad)
        return grad

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_features})"


class BatchNorm2D(_BatchNorm):
    """``BatchNorm2D(channels)`` for (N, H, W, C): statistics over N, H and W per channel."""

    rank = 3
    _layout = "(H, W, C)"


class BatchNorm1D(_BatchNorm):
    """``BatchNorm1D(features)`` for (N, features): statistics over the batch per feature."""

    rank = 1
    _layout = "(features,)"
