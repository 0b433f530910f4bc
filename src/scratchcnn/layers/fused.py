"""A convolution (and a batch norm) followed by a non-overlapping max-pool, run as one step:
``ConvPool``.

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

With a BatchNorm2D between the two (conv, norm, pool), the norm needs the statistics of every
conv output before anything can be pooled: the whole conv output is computed in pool order,
normalised there (the norm does not care about the order of positions), then folded offset by
offset; backward runs the norm's backward on the unpooled gradients in the same order. Then
the pool must tile the conv output exactly, and the bias is added before the norm.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import ShapeError
from ..kernels import FRESH, channelwise, column_sums
from .base import Layer, check_rank
from .conv import Conv2D
from .normalization import BatchNorm2D
from .pooling import MaxPool2D


def pool_tiles(conv_shape: tuple[int, ...], pool_size: tuple[int, int]) -> bool:
    """Whether a pool of ``pool_size``, stepped by its size, covers a (H, W, C) conv output
    with no ragged edge: the condition for running a batch norm in between fused."""
    return conv_shape[0] % pool_size[0] == 0 and conv_shape[1] % pool_size[1] == 0


class ConvPool(Layer):
    """``ConvPool(conv, pool, norm=None)`` computes ``pool(norm(conv(x)))`` (``norm`` is an
    optional BatchNorm2D), sharing the layers' parameters.

    Input (N, H, W, C) -> output (N, QH, QW, F), as the separate layers give it; gradients land
    in ``conv.grads`` (and ``norm.grads``). ``Sequential`` builds these itself from the layers
    it is given. With a batch norm the pool must tile the conv output exactly: its statistics
    cover every conv output, so none may be skipped.
    """

    def __init__(self, conv: Conv2D, pool: MaxPool2D, norm: BatchNorm2D | None = None) -> None:
        if pool.stride != pool.pool_size:
            raise ValueError(f"ConvPool needs a max-pool whose stride is its size, not {pool!r}")
        self.conv, self.pool, self.norm = conv, pool, norm
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
        conv_shape = self.conv.output_shape(input_shape)
        if self.norm is not None and not pool_tiles(conv_shape, self.pool.pool_size):
            oh, ow = conv_shape[:2]
            raise ShapeError(f"{self!r}: the pool must tile the {oh}x{ow} conv output exactly")
        return self.pool.output_shape(conv_shape)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        check_rank(x, 4, self, "(N, H, W, C)")
        qh, qw, f = self.output_shape(x.shape[1:])
        x = x.astype(self.conv.dtype, copy=False)
        n, dtype = x.shape[0], x.dtype
        scratch = self.conv.scratch if training else FRESH
        patches = self.conv.patches(x, self.pool.pool_size, scratch)
        weight, bias = self.conv.weight_matrix(), self.conv.params["bias"]
        m, offsets = n * qh * qw, self.pool.pool_size[0] * self.pool.pool_size[1]
        best = scratch.get("pooled", (m * f,), dtype)
        # above[k - 1]: where offset k beat the maximum of offsets 0..k-1 (ties do not)
        above = scratch.get("above", (offsets - 1, m * f), bool)

        def fold(k: int, candidate: np.ndarray) -> None:
            np.greater(candidate, best, out=above[k - 1])
            np.maximum(best, candidate, out=best)

        if self.norm is None:
            conv_k = scratch.get("conv_out", (m, f), dtype)  # one offset's outputs at a time
            np.matmul(patches[:m], weight, out=best.reshape(m, f))
            for k in range(1, offsets):
                np.matmul(patches[k * m : (k + 1) * m], weight, out=conv_k)
                fold(k, conv_k.reshape(-1))
            out = channelwise(np.add, best.reshape(n, qh, qw, f), bias)
        else:  # the batch norm needs every output first; it runs on them in pool order
            conv_out = np.matmul(patches, weight).reshape(offsets * n, qh, qw, f)
            channelwise(np.add, conv_out, bias, out=conv_out)
            normed = self.norm.forward(conv_out, training).reshape(offsets, m * f)
            best[...] = normed[0]
            for k in range(1, offsets):
                fold(k, normed[k])
            out = best.reshape(n, qh, qw, f).copy()
        if training:
            self._cache = (patches, above, x.shape)
        return out

    def _winners(self, above: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(k, hit)`` from the last window offset to the first: ``hit`` marks the
        outputs whose first maximum is at offset k (a reused buffer: use it at once)."""
        scratch = self.conv.scratch
        hit = scratch.get("hit", above.shape[1:], bool)
        claimed = scratch.get("claimed", above.shape[1:], bool)  # a later offset won here
        claimed[...] = False
        # The winner of a window is the last offset that beat everything before it. Walking
        # the offsets backwards, each one wins where it beat its predecessors and no later
        # offset has claimed the window yet; offset 0 takes what is left.
        for k in reversed(range(len(above) + 1)):
            if k > 0:
                np.greater(above[k - 1], claimed, out=hit)  # above and not claimed
                claimed |= hit
            else:
                np.logical_not(claimed, out=hit)
            yield k, hit

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError(f"{self!r}.backward called without a training forward pass")
        patches, above, input_shape = self._cache
        self._cache = None
        f, scratch, dtype = self.conv.out_channels, self.conv.scratch, patches.dtype
        (ph, pw), (n, qh, qw) = self.pool.pool_size, grad_out.shape[:3]
        m = n * qh * qw
        g = np.ascontiguousarray(grad_out, dtype=dtype).reshape(-1)
        plain = None
        if self.needs_input_grad:
            # dL/d(conv output) in plain order: (N, QH, PH, QW, PW, F) = (N, QH*PH, QW*PW, F)
            plain = scratch.get("unpooled_plain", (n, qh, ph, qw, pw, f), dtype)
        if self.norm is None:  # one window offset at a time, as in forward
            grad_k = scratch.get("unpooled", (m, f), dtype)  # dL/d(conv output) at offset k
            grad_w = np.zeros((patches.shape[1], f), dtype)
            for k, hit in self._winners(above):
                np.multiply(g, hit, out=grad_k.reshape(-1))
                grad_w += patches[k * m : (k + 1) * m].T @ grad_k
                if plain is not None:
                    plain[:, :, k // pw, :, k % pw, :] = grad_k.reshape(n, qh, qw, f)
            grad_b = column_sums(g.reshape(-1, f))  # each pooled output has one winner
        else:  # the norm's backward needs every offset's gradient: (PH*PW, N*QH*QW, F)
            unpooled = scratch.get("unpooled", (len(above) + 1, m * f), dtype)
            for k, hit in self._winners(above):
                np.multiply(g, hit, out=unpooled[k])
            rows = self.norm.backward(unpooled.reshape(-1, qh, qw, f)).reshape(-1, f)
            grad_w, grad_b = patches.T @ rows, column_sums(rows)
            if plain is not None:
                plain[...] = rows.reshape(ph, pw, n, qh, qw, f).transpose(2, 3, 0, 4, 1, 5)
        self.conv.set_weight_grads(grad_w, grad_b)
        if plain is None:
            return None
        return self.conv.input_grad(plain.reshape(n, qh * ph, qw * pw, f), input_shape)

    def __repr__(self) -> str:
        middle = f" + {self.norm!r}" if self.norm is not None else ""
        return f"{self.conv!r}{middle} + {self.pool!r}"
