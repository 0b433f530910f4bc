"""A convolution followed by a non-overlapping max-pool, run as one step: ``ConvPool``.

Conv2D and MaxPool2D stay the definitions (and the reference this is tested against). The pair
is the costliest part of a small CNN, and run together it gets cheaper:

* im2col gathers the patches in pool order (``kernels.im2col(pool=...)``): the patches of the
  pixels at window offset k (of PH*PW) are one contiguous block of rows P_k. The conv output of
  one offset at a time, P_k @ W (N*QH*QW, F), is folded into a running maximum while it is
  still in cache, and then dropped: no strided pooling views (a pool over NHWC walks rows only
  C floats long), and the full-size conv output is never stored;
* outputs that a ragged pool edge drops are never computed: the keras net's second conv makes
  10x10 of its 11x11 outputs, 17% fewer FLOPs in all three of its GEMMs;
* the bias is added after the max, to a PH*PW times smaller array. max_k(a_k + b) =
  max_k(a_k) + b holds exactly in floating point too, since rounding is monotonic.

    forward    y     = max_k (P_k @ W) + b                                   (N, QH, QW, F)
    backward   G_k   = dL/dy * [k is the first maximum of its window]   (the binary mask)
               dL/dW = sum_k P_k^T @ G_k,     dL/db = dL/dy summed over pixels
               dL/dx = Conv2D.input_grad(G, in plain (N, QH*PH, QW*PW, F) order)

The binary mask is kept as PH*PW - 1 boolean arrays of the output's size: "offset k beat every
earlier offset". A window's winner is the last offset that did, so ties go to the first
maximum in row-major window order, as in MaxPool2D and PyTorch. Ties are judged before the bias
is added: two values that only round to a tie in a + b are not one.
"""

from __future__ import annotations

import numpy as np

from ..kernels import FRESH, channelwise, column_sums
from .base import Layer, check_rank
from .conv import Conv2D
from .pooling import MaxPool2D


class ConvPool(Layer):
    """``ConvPool(conv, pool)`` computes ``pool(conv(x))``, sharing ``conv``'s parameters.

    Input (N, H, W, C) -> output (N, QH, QW, F), as the two layers give it; gradients land in
    ``conv.grads``. ``Sequential`` builds these itself from the layers it is given.
    """

    def __init__(self, conv: Conv2D, pool: MaxPool2D) -> None:
        if pool.stride != pool.pool_size:
            raise ValueError(f"ConvPool needs a max-pool whose stride is its size, not {pool!r}")
        self.conv, self.pool = conv, pool
        self._cache: tuple[np.ndarray, ...] | None = None

    # The parameters, their gradients and the input-gradient switch are the convolution's.
    @property
    def params(self) -> dict[str, np.ndarray]:
        return self.conv.params

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self.conv.grads

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        return {}

    @property
    def needs_input_grad(self) -> bool:
        return self.conv.needs_input_grad

    @needs_input_grad.setter
    def needs_input_grad(self, value: bool) -> None:
        self.conv.needs_input_grad = value

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.pool.output_shape(self.conv.output_shape(input_shape))

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        check_rank(x, 4, self, "(N, H, W, C)")
        qh, qw, f = self.output_shape(x.shape[1:])
        x = x.astype(self.conv.dtype, copy=False)
        n, dtype = x.shape[0], x.dtype
        scratch = self.conv.scratch if training else FRESH
        patches = self.conv.patches(x, self.pool.pool_size, scratch)
        weight = self.conv.weight_matrix()
        m, offsets = n * qh * qw, self.pool.pool_size[0] * self.pool.pool_size[1]
        best = scratch.get("pooled", (m, f), dtype)
        # above[k - 1]: where offset k beat the maximum of offsets 0..k-1 (ties do not)
        above = scratch.get("above", (offsets - 1, m * f), bool)
        conv_k = scratch.get("conv_out", (m, f), dtype)  # one offset's outputs at a time
        np.matmul(patches[:m], weight, out=best)
        running, candidate = best.reshape(-1), conv_k.reshape(-1)
        for k in range(1, offsets):
            np.matmul(patches[k * m : (k + 1) * m], weight, out=conv_k)
            np.greater(candidate, running, out=above[k - 1])
            np.maximum(running, candidate, out=running)
        out = channelwise(np.add, best.reshape(n, qh, qw, f), self.conv.params["bias"])
        if training:
            self._cache = (patches, above, x.shape)
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError(f"{self!r}.backward called without a training forward pass")
        patches, above, input_shape = self._cache
        self._cache = None
        f, scratch, dtype = self.conv.out_channels, self.conv.scratch, patches.dtype
        (ph, pw), (n, qh, qw) = self.pool.pool_size, grad_out.shape[:3]
        m, offsets = n * qh * qw, ph * pw
        g = np.ascontiguousarray(grad_out, dtype=dtype).reshape(-1)
        hit = scratch.get("hit", g.shape, bool)
        claimed = scratch.get("claimed", g.shape, bool)  # a later offset won here
        grad_k = scratch.get("unpooled", (m, f), dtype)  # dL/d(conv output) at one offset
        plain = None
        if self.needs_input_grad:
            # the same gradients in plain order: (N, QH, PH, QW, PW, F) = (N, QH*PH, QW*PW, F)
            plain = scratch.get("unpooled_plain", (n, qh, ph, qw, pw, f), dtype)
        grad_w = np.zeros((patches.shape[1], f), dtype)
        # The winner of a window is the last offset that beat everything before it. Walking
        # the offsets backwards, each one wins where it beat its predecessors and no later
        # offset has claimed the window yet; offset 0 takes what is left.
        claimed[...] = False
        for k in reversed(range(offsets)):
            if k > 0:
                np.greater(above[k - 1], claimed, out=hit)  # above and not claimed
                claimed |= hit
            else:
                np.logical_not(claimed, out=hit)
            np.multiply(g, hit, out=grad_k.reshape(-1))
            grad_w += patches[k * m : (k + 1) * m].T @ grad_k
            if plain is not None:
                plain[:, :, k // pw, :, k % pw, :] = grad_k.reshape(n, qh, qw, f)
        self.conv.set_weight_grads(grad_w, column_sums(g.reshape(-1, f)))
        if plain is None:
            return None
        return self.conv.input_grad(plain.reshape(n, qh * ph, qw * pw, f), input_shape)

    def __repr__(self) -> str:
        return f"{self.conv!r} + {self.pool!r}"
