"""2-D convolution over NHWC batches, as im2col + one matrix product.

Forward, for input x (N, H, W, C), weight w (F, C, KH, KW) and bias b (F,):

    cols = im2col(x)                       (N*OH*OW, K)   with K = KH*KW*C
    W    = w laid out as (K, F)            (rows in the same (KH, KW, C) order as a patch)
    y    = cols @ W + b                    (N*OH*OW, F) = (N, OH, OW, F)

Backward, given G = dL/dy reshaped to (N*OH*OW, F):

    dL/dW = cols^T @ G                     (K, F)   -> the "kernel loss", back to (F, C, KH, KW)
    dL/db = sum of G over rows             (F,)
    dL/dx = col2im(G @ W^T)                (N, H, W, C)

With one input channel the patches are gathered offset-major, giving cols^T (K, N*OH*OW)
directly (see ``kernels.im2col``); the products then use its transpose, a free view.

G @ W^T is computed as KH*KW products G @ w[:, :, i, j] (one batched matmul), which gives the
patch gradients offset by offset, each a contiguous slab that col2im adds in one pass.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..kernels import FRESH, Scratch, channelwise, col2im, column_sums, im2col, output_size, pair
from .base import Layer, check_rank, glorot_std, he_std


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
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
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
        self.scratch = Scratch()  # training temporaries, reused from step to step
        self._cache: tuple[np.ndarray, tuple[int, ...]] | None = None

    def reset_parameters(self, rng: np.random.Generator, relu_gain: bool = True) -> None:
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        fan_out = self.out_channels * kh * kw
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

    def weight_matrix(self) -> np.ndarray:
        """The weight as a (KH*KW*C, F) matrix whose rows follow an im2col patch."""
        f = self.out_channels
        return self.params["weight"].transpose(2, 3, 1, 0).reshape(-1, f)

    def patches(
        self, x: np.ndarray, pool: tuple[int, int] = (1, 1), scratch: Scratch = FRESH
    ) -> np.ndarray:
        """The (M, KH*KW*C) patch matrix of ``x`` (N, H, W, C): one row per output pixel, in
        im2col's order for ``pool`` (M = N*OH*OW in the default, plain order)."""
        kh, kw = self.kernel_size
        k = kh * kw * self.in_channels
        single = self.in_channels == 1  # offset-major cols are the transposed patch matrix
        cols = im2col(x, self.kernel_size, self.stride, self.padding, single, pool, scratch)
        return cols.reshape(k, -1).T if single else cols.reshape(-1, k)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        check_rank(x, 4, self, "(N, H, W, C)")
        oh, ow, f = self.output_shape(x.shape[1:])
        x = x.astype(self.dtype, copy=False)
        patches = self.patches(x, scratch=self.scratch if training else FRESH)
        out = (patches @ self.weight_matrix()).reshape(x.shape[0], oh, ow, f)
        channelwise(np.add, out, self.params["bias"], out=out)
        if training:
            self._cache = (patches, x.shape)
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError(f"{self!r}.backward called without a training forward pass")
        patches, input_shape = self._cache
        self._cache = None
        g = np.ascontiguousarray(grad_out, dtype=patches.dtype)
        rows = g.reshape(-1, self.out_channels)
        self.set_weight_grads(patches.T @ rows, column_sums(rows))
        return self.input_grad(g, input_shape) if self.needs_input_grad else None

    def set_weight_grads(self, grad_matrix: np.ndarray, grad_bias: np.ndarray) -> None:
        """Store dL/dW given as a (KH*KW*C, F) matrix (rows in patch order) and dL/db (F,)."""
        kh, kw = self.kernel_size
        self.grads = {
            "weight": np.ascontiguousarray(
                grad_matrix.reshape(kh, kw, self.in_channels, -1).transpose(3, 2, 0, 1)
            ),
            "bias": grad_bias,
        }

    def input_grad(self, grad_out: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
        """dL/dx (input_shape) from a C-contiguous dL/dy (N, OH', OW', F).

        OH' and OW' may be smaller than the output's: pixels past them then get no gradient,
        as when a max-pool drops a ragged edge."""
        n, oh, ow, f = grad_out.shape
        kh, kw = self.kernel_size
        per_offset = self.params["weight"].transpose(2, 3, 0, 1).reshape(kh * kw, f, -1)
        shape = (kh * kw, n * oh * ow, self.in_channels)
        slabs = self.scratch.get("patch_grads", shape, grad_out.dtype)
        np.matmul(grad_out.reshape(-1, f), per_offset, out=slabs)
        return col2im(
            slabs.reshape(kh, kw, n, oh, ow, -1),
            input_shape,
            self.kernel_size,
            self.stride,
            self.padding,
        )

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
