"""Batch normalisation over the channel axis (the last axis: NHWC, or (N, features)).

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

from typing import Any

import numpy as np

from ...errors import ShapeError
from .base import Layer, as_int


class _BatchNorm(Layer):
    rank = 0  # the per-sample rank the subclass expects
    layout = ""

    def __init__(
        self,
        num_features: int,
        momentum: float = 0.1,
        eps: float = 1e-5,
        dtype: type | np.dtype = np.float32,
    ) -> None:
        super().__init__()
        self.num_features = as_int(num_features, "num_features")
        self.momentum, self.eps = float(momentum), float(eps)
        if self.num_features < 1 or not 0.0 <= self.momentum <= 1.0 or not self.eps > 0.0:
            raise ValueError(
                f"{type(self).__name__} needs num_features >= 1, momentum in [0, 1] and eps > 0, "
                f"got {num_features}, {momentum}, {eps}"
            )
        self.params = {
            "weight": np.ones(self.num_features, dtype=dtype),
            "bias": np.zeros(self.num_features, dtype=dtype),
        }
        self.buffers = {
            "running_mean": np.zeros(self.num_features, dtype=dtype),
            "running_var": np.ones(self.num_features, dtype=dtype),
        }

    def config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}

    def reset_parameters(self, rng: np.random.Generator, relu_gain: bool = True) -> None:
        self.params["weight"][...] = 1.0
        self.params["bias"][...] = 0.0
        self.buffers["running_mean"][...] = 0.0
        self.buffers["running_var"][...] = 1.0

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != self.rank or input_shape[-1] != self.num_features:
            raise ShapeError(
                f"{self!r} expects per-sample shape {self.layout} with "
                f"{self.num_features} channels last, got {tuple(input_shape)}"
            )
        return tuple(input_shape)

    def update_running_stats(self, mean: np.ndarray, var: np.ndarray, count: int) -> None:
        """Move the running statistics toward this batch's (``var`` is the biased variance
        over ``count`` values per channel; the running one is unbiased, as in PyTorch)."""
        m = self.momentum
        unbiased = var * (count / max(count - 1, 1))
        for key, value in (("running_mean", mean), ("running_var", unbiased)):
            running = self.buffers[key]
            running[...] = (1 - m) * running + m * value

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != self.rank + 1:
            raise ShapeError(f"{self!r} expects a batch (N, {self.layout[1:]}, got {np.shape(x)}")
        self.output_shape(x.shape[1:])
        x = x.astype(self.dtype, copy=False)
        gamma, beta = self.params["weight"], self.params["bias"]
        if not training:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
            return (x - mean) * (gamma / np.sqrt(var + self.eps)) + beta
        axes = tuple(range(x.ndim - 1))  # every axis but the channels
        mean = x.mean(axis=axes)
        centred = x - mean
        var = (centred * centred).mean(axis=axes)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        xhat = centred * inv_std
        self.update_running_stats(mean, var, x.size // self.num_features)
        self.save_for_backward(xhat, inv_std)
        return gamma * xhat + beta

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        xhat, inv_std = self.saved()
        axes = tuple(range(grad_out.ndim - 1))
        grad_beta = grad_out.sum(axis=axes)
        grad_gamma = (grad_out * xhat).sum(axis=axes)
        self.grads = {"weight": grad_gamma, "bias": grad_beta}
        count = grad_out.size // self.num_features
        scale = self.params["weight"] * inv_std
        return scale * (grad_out - grad_beta / count - xhat * (grad_gamma / count))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_features})"


class BatchNorm2D(_BatchNorm):
    """``BatchNorm2D(channels)`` for (N, H, W, C): statistics over N, H and W per channel."""

    rank = 3
    layout = "(H, W, C)"


class BatchNorm1D(_BatchNorm):
    """``BatchNorm1D(features)`` for (N, features): statistics over the batch per feature."""

    rank = 1
    layout = "(features,)"
