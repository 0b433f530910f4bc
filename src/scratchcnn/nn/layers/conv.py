"""2-D convolution over NHWC batches, as im2col + one matrix product (see ``nn/im2col.py``).

Forward, for input x (N, H, W, C), weight w (F, C, KH, KW) and bias b (F,):

    cols = im2col(x)                       (N*OH*OW, K)    K = KH*KW*C, one row per patch
    W    = w laid out as (K, F)            rows in a patch's (KH, KW, C) order
    y    = cols @ W + b                    (N*OH*OW, F) = (N, OH, OW, F)

Backward, given G = dL/dy as (N*OH*OW, F):

    dL/dW = cols^T @ G                     (K, F)  -> back to (F, C, KH, KW): the "kernel loss"
    dL/db = G summed over its rows         (F,)
    dL/dx = col2im(G @ W^T)                each patch's gradient added back where it was read

G @ W^T is computed one kernel offset at a time, G @ w[:, :, i, j] (N*OH*OW, C) for offset (i, j):
one batched product whose KH*KW results are the slabs ``col2im`` adds back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import ShapeError
from ..im2col import col2im, im2col, output_size, pair
from .base import Layer, as_int, check_rank, glorot_std, he_std


class Conv2D(Layer):
    """``Conv2D(in_channels, out_channels, kernel_size, stride=1, padding=0)``.

    Parameters: ``weight`` (out_channels, in_channels, KH, KW), ``bias`` (out_channels,).
    Input (N, H, W, in_channels) -> output (N, OH, OW, out_channels), with
    ``OH = (H + 2*padding - KH) // stride + 1`` (and likewise for the width).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        rng: np.random.Generator | None = None,
        dtype: type | np.dtype = np.float32,
    ) -> None:
        super().__init__()
        self.in_channels = as_int(in_channels, "in_channels")
        self.out_channels = as_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = pair(padding, "padding")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError("Conv2D needs at least one input and one output channel")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(
                f"Conv2D: kernel_size and stride must be >= 1 and padding >= 0, got "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
            )
        kh, kw = self.kernel_size
        self.params = {
            "weight": np.zeros((self.out_channels, self.in_channels, kh, kw), dtype=dtype),
            "bias": np.zeros(self.out_channels, dtype=dtype),
        }
        self.reset_parameters(rng if rng is not None else np.random.default_rng())

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
        }

    def reset_parameters(self, rng: np.random.Generator, relu_gain: bool = True) -> None:
        kh, kw = self.kernel_size
        fan_in, fan_out = self.in_channels * kh * kw, self.out_channels * kh * kw
        std = he_std(fan_in) if relu_gain else glorot_std(fan_in, fan_out)
        weight = self.params["weight"]
        weight[...] = rng.normal(0.0, std, size=weight.shape)
        self.params["bias"][...] = 0.0

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
        if len(input_shape) != 3:
            raise ShapeError(f"{self!r} expects per-sample shape (H, W, C), got {input_shape}")
        h, w, c = input_shape
        if c != self.in_channels:
            raise ShapeError(
                f"{self!r} expects {self.in_channels} input channel(s) in the last axis of "
                f"(N, H, W, C), got {c} (input shape {tuple(input_shape)})"
            )
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise ShapeError(
                f"{self!r}: kernel {kh}x{kw} is larger than the padded input "
                f"{h + 2 * ph}x{w + 2 * pw}"
            )
        return (output_size(h, kh, sh, ph), output_size(w, kw, sw, pw), self.out_channels)

    # -- the weight as a matrix: rows in the order of an im2col patch (KH, KW, C) ---------------
    def weight_matrix(self) -> np.ndarray:
        """The weight (F, C, KH, KW) as a (KH*KW*C, F) matrix."""
        return self.params["weight"].transpose(2, 3, 1, 0).reshape(-1, self.out_channels)

    def offset_weights(self) -> np.ndarray:
        """The weight (F, C, KH, KW) as KH*KW matrices (F, C), one per kernel offset (i, j):
        w[:, :, i, j], C-contiguous (a copy: BLAS wants rows)."""
        kh, kw = self.kernel_size
        per_offset = self.params["weight"].transpose(2, 3, 0, 1)  # (KH, KW, F, C)
        return per_offset.reshape(kh * kw, self.out_channels, self.in_channels)

    def weight_grad(self, grad_matrix: np.ndarray) -> np.ndarray:
        """dL/dW as a (KH*KW*C, F) matrix -> dL/dweight (F, C, KH, KW)."""
        kh, kw = self.kernel_size
        grad = grad_matrix.reshape(kh, kw, self.in_channels, self.out_channels)
        return np.ascontiguousarray(grad.transpose(3, 2, 0, 1))

    # -- forward and backward --------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        check_rank(x, 4, self, "(N, H, W, C)")
        oh, ow, f = self.output_shape(x.shape[1:])
        x = x.astype(self.dtype, copy=False)
        cols = im2col(x, self.kernel_size, self.stride, self.padding)
        cols = cols.reshape(x.shape[0] * oh * ow, -1)  # (N*OH*OW, KH*KW*C)
        out = cols @ self.weight_matrix()
        out += self.params["bias"]  # in place: no second output-sized array
        if training:
            self.save_for_backward(cols, x.shape)
        return out.reshape(x.shape[0], oh, ow, f)

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        cols, input_shape = self.saved()
        g = grad_out.reshape(-1, grad_out.shape[-1])  # (N*OH*OW, F)
        self.grads = {"weight": self.weight_grad(cols.T @ g), "bias": g.sum(axis=0)}
        if not self.needs_input_grad:
            return None
        return self.input_grad(grad_out, input_shape)

    def input_grad(self, grad_out: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
        """dL/dx (input_shape) from dL/dy (N, OH', OW', F): col2im of G @ w[:, :, i, j] for each
        kernel offset (i, j), one batched product. OH', OW' may be smaller than the output (the
        pixels past them get no gradient, as when a max-pool drops a ragged edge)."""
        n, oh, ow, f = grad_out.shape
        kh, kw = self.kernel_size
        slabs = np.matmul(grad_out.reshape(-1, f), self.offset_weights())  # (KH*KW, N*OH'*OW', C)
        slabs = slabs.reshape(kh, kw, n, oh, ow, self.in_channels)
        return col2im(slabs, input_shape, self.stride, self.padding)

    def __repr__(self) -> str:
        kh, kw = self.kernel_size
        extra = ""
        if self.stride != (1, 1):
            s = self.stride
            extra += f", stride={s[0] if s[0] == s[1] else s}"
        if self.padding != (0, 0):
            p = self.padding
            extra += f", padding={p[0] if p[0] == p[1] else p}"
        k = kh if kh == kw else (kh, kw)
        return f"Conv2D({self.in_channels}, {self.out_channels}, {k}{extra})"
