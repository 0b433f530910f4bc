"""Fully connected layer.

Forward:  y = x @ W^T + b          x (N, D_in), W (D_out, D_in), b (D_out,) -> y (N, D_out)
Backward: dL/dW = G^T @ x,  dL/db = sum_n G,  dL/dx = G @ W      with G = dL/dy (N, D_out)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import ShapeError
from .base import Layer, as_int, check_rank, glorot_std, he_std


class Dense(Layer):
    """``Dense(in_features, out_features)``, weight stored (out, in) as in PyTorch."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rng: np.random.Generator | None = None,
        dtype: type | np.dtype = np.float32,
    ) -> None:
        super().__init__()
        self.in_features = as_int(in_features, "in_features")
        self.out_features = as_int(out_features, "out_features")
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError("Dense needs at least one input and one output feature")
        self.params = {
            "weight": np.zeros((self.out_features, self.in_features), dtype=dtype),
            "bias": np.zeros(self.out_features, dtype=dtype),
        }
        self.reset_parameters(rng if rng is not None else np.random.default_rng(), False)

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features}

    def reset_parameters(self, rng: np.random.Generator, relu_gain: bool = True) -> None:
        if relu_gain:
            std = he_std(self.in_features)
        else:
            std = glorot_std(self.in_features, self.out_features)
        weight = self.params["weight"]
        weight[...] = rng.normal(0.0, std, size=weight.shape)
        self.params["bias"][...] = 0.0

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int]:
        if tuple(input_shape) != (self.in_features,):
            raise ShapeError(
                f"{self!r} expects per-sample shape ({self.in_features},), got {tuple(input_shape)}"
            )
        return (self.out_features,)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        check_rank(x, 2, self, "(N, features)")
        self.output_shape(x.shape[1:])
        x = x.astype(self.dtype, copy=False)
        if training:
            self.save_for_backward(x)
        return x @ self.params["weight"].T + self.params["bias"]

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        (x,) = self.saved()
        self.grads = {"weight": grad_out.T @ x, "bias": grad_out.sum(axis=0)}
        return grad_out @ self.params["weight"] if self.needs_input_grad else None

    def __repr__(self) -> str:
        return f"Dense({self.in_features}, {self.out_features})"
