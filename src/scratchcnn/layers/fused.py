"""A convolution followed by a non-overlapping max-pool, run as one step: ``ConvPool``.

Conv2D and MaxPool2D stay the definitions (and the reference this is tested against). The pair
is the costliest part of a small CNN, and run together it gets cheaper:

* im2col gathers the patches in pool order (``kernels.im2col(pool=...)``), so the GEMM returns
  the convolution output as PH*PW contiguous slabs, one per window offset, each (N*QH*QW, F):
  pooling is then PH*PW - 1 element-wise maximums of whole slabs, unpooling PH*PW masked
  copies, with none of the short strided rows a pool over NHWC walks (8 floats long for 8
  channels);
* outputs that a ragged pool edge drops are never computed: the keras net's second conv makes
  10x10 of its 11x11 outputs, 17% fewer FLOPs in all three of its GEMMs;
* the bias is added after the max, to a PH*PW times smaller array. max_k(a_k + b) =
  max_k(a_k) + b holds exactly in floating point too, since rounding is monotonic.

For window offset k, with P_k the (N*QH*QW, K) patches of the pixels at offset k:

    forward    y    = max_k (P_k @ W) + b                           (N, QH, QW, F)
    backward   G_k  = dL/dy * [k is the first maximum of its window]   (the binary mask)
               dL/dW = sum_k P_k^T @ G_k = P^T @ G,   dL/db = dL/dy summed over pixels
               dL/dx = Conv2D.input_grad(G, reordered to plain (N, QH*PH, QW*PW, F))

Ties go to the first maximum in row-major window order, as in MaxPool2D and PyTorch. They are
judged before the bias is added, so two values that only round to a tie in a + b are not one.
"""

from __future__ import annotations

import numpy as np

from ..kernels import FRESH, add_bias, column_sums, parallel_over_batch
from .base import Layer, check_rank
from .conv import Conv2D
from .pooling import MaxPool2D, first_maximum_hits


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
        conv_out = scratch.get("conv_out", (len(patches), f), dtype)
        np.matmul(patches, self.conv.weight_matrix(), out=conv_out)
        slabs = conv_out.reshape(-1, n * qh * qw * f)  # (PH*PW, N*QH*QW*F)
        best = scratch.get("pooled", slabs.shape[1:], dtype)

        def pool(s: slice) -> None:
            slabs[:, s].max(axis=0, out=best[s])

        parallel_over_batch(pool, best.size, slabs.size)
        rows = (n, qh * qw * f)
        out = add_bias(best.reshape(rows), self.conv.params["bias"], np.empty(rows, best.dtype))
        if training:
            self._cache = (patches, slabs, best, x.shape)
        return out.reshape(n, qh, qw, f)

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError(f"{self!r}.backward called without a training forward pass")
        patches, slabs, best, input_shape = self._cache
        self._cache = None
        g = np.ascontiguousarray(grad_out, dtype=slabs.dtype).reshape(-1)
        scratch = self.conv.scratch
        unpooled = scratch.get("unpooled", slabs.shape, slabs.dtype)  # G, one slab per offset

        def unpool(s: slice) -> None:
            hits = first_maximum_hits((slab[s] for slab in slabs), best[s], len(slabs))
            for target, hit in zip(unpooled[:, s], hits, strict=True):
                np.multiply(g[s], hit, out=target)

        parallel_over_batch(unpool, g.size, unpooled.size)
        f = self.conv.out_channels
        self.conv.set_grads(patches, unpooled.reshape(-1, f), column_sums(g.reshape(-1, f)))
        if not self.needs_input_grad:
            return None
        (ph, pw), (n, qh, qw) = self.pool.pool_size, grad_out.shape[:3]
        # (PH, PW, N, QH, QW, F) -> (N, QH, PH, QW, PW, F), which is (N, QH*PH, QW*PW, F)
        by_offset = unpooled.reshape(ph, pw, n, qh, qw, f)
        plain = scratch.get("unpooled_plain", (n, qh, ph, qw, pw, f), unpooled.dtype)

        def reorder(s: slice) -> None:
            plain[s] = by_offset[:, :, s].transpose(2, 3, 0, 4, 1, 5)

        parallel_over_batch(reorder, n, plain.size)
        return self.conv.input_grad(plain.reshape(n, qh * ph, qw * pw, f), input_shape)

    def __repr__(self) -> str:
        return f"{self.conv!r} + {self.pool!r}"
