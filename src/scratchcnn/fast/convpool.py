"""A convolution (and a batch norm, and a ReLU) followed by a max-pool whose stride is its size,
run as one op: ``ConvPoolOp``. It computes what Conv2D, BatchNorm2D, ReLU and MaxPool2D compute
one after the other, and it is the largest saving of the fast path:

* the patches are gathered in pool order (``patches.gather_patches(pool=...)``): the patches
  of the output pixels at window offset k (of PH*PW) are one contiguous block of rows P_k. The
  conv output of one offset at a time, P_k @ W + b (N*QH*QW, F), is folded into a running
  maximum while it is still in cache and then dropped: no strided pooling views (a pool over
  NHWC walks runs only C values long), and the full conv output is never stored;
* the conv outputs that a ragged pool edge drops are never computed: the keras net's second
  conv makes 10x10 of its 11x11 outputs, 17% fewer FLOPs in all three of its products;
* the winners are the plain layer's: ``first_maximum`` (ties go to the first maximum, judged
  on the same values P_k @ W + b), kept as one small integer per pooled output;
* the ReLU runs on the pooled values, PH*PW times fewer (max(relu(a)) = relu(max(a)): see
  ``plan.py``), with its mask, on the values still in cache;
* inference (``training=False``) keeps no winners: it runs ``inference.conv_inference``, one
  maximum over the offsets, a few samples at a time (see ``inference.py``).

    forward    y     = max_k (P_k @ W + b)      (then relu(y))                (N, QH, QW, F)
    backward   G_k   = dL/dy * [winner == k]  (* [y > 0])     the binary mask, offset by offset
               dL/dW = sum_k P_k^T @ G_k,     dL/db = dL/dy summed over pixels
               dL/dx = the conv's input gradient of G laid out in plain (N, QH*PH, QW*PW, F)

With a batch norm between the two (conv, norm, pool), the norm needs the statistics of every
conv output before anything can be pooled: the whole conv output is computed in pool order and
standardised there, in place (the statistics do not depend on the order of the positions);
then each offset's slab is scaled and shifted (gamma, beta) into a buffer that stays in cache
and folded into the maximum, so the norm's output is never stored whole. Backward runs the
norm's backward on the unpooled gradients in the same order, in their memory. The pool must
then tile the conv output exactly (``pool_tiles``).
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..nn.layers import Conv2D, MaxPool2D, ReLU
from ..nn.layers.base import check_rank
from ..nn.layers.pooling import first_maximum, winner_dtype
from . import products, winograd
from .blas import blas_on_one_thread
from .channels import along_row, channel_sums, channelwise
from .inference import conv_inference
from .ops import BatchNormOp, Op, conv_input_grad
from .patches import pad, patch_matrix
from .workspace import Workspace


def pool_tiles(conv_shape: tuple[int, ...], pool_size: tuple[int, int]) -> bool:
    """Whether a pool of ``pool_size``, stepped by its size, covers a (H, W, C) conv output
    with no ragged edge: the condition for running a batch norm in between fused."""
    return conv_shape[0] % pool_size[0] == 0 and conv_shape[1] % pool_size[1] == 0


class ConvPoolOp(Op):
    """``ConvPoolOp(conv, pool, norm=None, relu=None)`` computes ``pool(relu(norm(conv(x))))``;
    ``norm`` (a BatchNormOp) and ``relu`` (a ReLU layer) are optional. Input (N, H, W, C) ->
    output (N, QH, QW, F)."""

    def __init__(
        self,
        conv: Conv2D,
        pool: MaxPool2D,
        norm: BatchNormOp | None = None,
        relu: ReLU | None = None,
    ) -> None:
        if pool.stride != pool.pool_size:
            raise ValueError(f"ConvPoolOp needs a max-pool whose stride is its size, not {pool!r}")
        super().__init__()
        self.conv, self.pool, self.norm, self.relu = conv, pool, norm, relu
        inner = () if norm is None else (norm.norm,)
        self.layers = (conv, *inner, *(() if relu is None else (relu,)), pool)
        self.workspace = Workspace()

    def norm_ops(self) -> list[BatchNormOp]:
        return [] if self.norm is None else [self.norm]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        conv_shape = self.conv.output_shape(input_shape)
        if self.norm is not None and not pool_tiles(conv_shape, self.pool.pool_size):
            oh, ow = conv_shape[:2]
            raise ShapeError(f"{self!r}: the pool must tile the {oh}x{ow} conv output exactly")
        return self.pool.output_shape(conv_shape)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        conv = self.conv
        check_rank(x, 4, conv, "(N, H, W, C)")
        qh, qw, f = self.output_shape(x.shape[1:])
        x = x.astype(conv.dtype, copy=False)
        if not training:
            affine = None if self.norm is None else self.norm.affine()
            return conv_inference(x, conv, self.pool.pool_size, affine, self.relu is not None)
        n, dtype, memory = len(x), x.dtype, self.workspace
        pool = self.pool.pool_size
        m, offsets = n * qh * qw, pool[0] * pool[1]
        patches = patch_matrix(x, conv.kernel_size, conv.stride, conv.padding, pool, memory)
        # Every window offset's conv outputs in one product: slab k is P_k @ W (N*QH*QW, F).
        conv_out = memory.get("conv_out", (offsets, m, f), dtype)
        one_thread = blas_on_one_thread()  # then the products run in pieces (products.py)
        products.matmul(patches, conv.weight_matrix(), conv_out.reshape(-1, f), one_thread)
        channelwise(
            np.add,
            conv_out.reshape(offsets * n, qh, qw, f),
            conv.params["bias"],
            out=conv_out.reshape(offsets * n, qh, qw, f),
        )
        best = memory.get("pooled", (m, f), dtype)
        winner = memory.get("winner", (m, f), winner_dtype(offsets))
        candidates = conv_out
        if self.norm is not None:  # the statistics do not depend on the order of positions
            xhat = self.norm.standardize(conv_out.reshape(offsets * n, qh, qw, f), overwrite=True)
            candidates = self._normed_slabs(xhat.reshape(offsets, n, -1), best)
        first_maximum(candidates, best, winner, memory.get("beat", (m, f), winner.dtype))
        mask = None
        if self.relu is not None:  # as ReLUOp: y = x * [x > 0]
            mask = np.greater(best, 0, out=memory.get("relu_mask", (m, f), bool))
            np.multiply(best, mask, out=best)
        # The backward pass may run as Winograd's F(2x2, 3x3), from the input: where BLAS has
        # one thread (a part of a split batch), as its 16 small products a chunk gain little
        # from more, where the patch products do.
        fewer_products = None
        if winograd.applies(conv, pool) and one_thread:
            fewer_products = winograd.PooledWinograd(conv, dtype)
        self.save_for_backward(patches, x, fewer_products, winner, mask, one_thread)
        return best.reshape(n, qh, qw, f).copy()

    def _normed_slabs(self, xhat: np.ndarray, best: np.ndarray):
        """The norm's output xhat * gamma + beta of each window offset's slab of ``xhat``
        (offsets, N, QH*QW*F), as (N*QH*QW, F): the first one into ``best``, each later one
        into one buffer, still in cache when ``first_maximum`` folds it in. The whole normed
        conv output is never stored."""
        norm, row = self.norm.norm, xhat.shape[2]
        gamma = along_row(norm.params["weight"], row, xhat.dtype)
        beta = along_row(norm.params["bias"], row, xhat.dtype)
        slab = best
        for k in range(len(xhat)):
            rows = slab.reshape(-1, row)
            np.multiply(xhat[k], gamma, out=rows)
            np.add(rows, beta, out=rows)
            yield slab
            slab = self.workspace.get("normed", best.shape, best.dtype)

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        patches, x, fewer_products, winner, mask, one_thread = self.saved()
        conv, memory, dtype = self.conv, self.workspace, patches.dtype
        (ph, pw), (n, qh, qw, f) = self.pool.pool_size, grad_out.shape
        m, offsets = n * qh * qw, ph * pw
        g = np.ascontiguousarray(grad_out, dtype=dtype).reshape(m, f)
        if mask is not None:  # through the ReLU first: dL/d(pooled) = dL/dy * [pooled > 0]
            g = np.multiply(g, mask, out=memory.get("relu_grad", (m, f), dtype))
        # The binary mask of every offset at once: hit[k] = (winner == k); then G_k = g * hit[k].
        hit = memory.get("hit", (offsets, m, f), bool)
        np.equal(winner, np.arange(offsets, dtype=winner.dtype)[:, None, None], out=hit)
        unpooled = memory.get("unpooled", (offsets, m, f), dtype)
        np.multiply(g, hit, out=unpooled)
        rows = unpooled.reshape(-1, f)  # dL/d(conv output), pool order
        if self.norm is not None:  # unpooled is dead after this: the norm may write over it
            unpooled = unpooled.reshape(offsets * n, qh, qw, f)
            rows = self.norm.backward(unpooled, overwrite=True).reshape(-1, f)
        input_shape = x.shape
        if fewer_products is not None:
            xp = pad(x, conv.padding, memory)
            weight, grad_in = fewer_products.backward(
                xp, rows, memory, input_shape if conv.needs_input_grad else None, conv.padding
            )
            conv.grads = {"weight": conv.weight_grad(weight), "bias": channel_sums(rows)}
            return grad_in
        weight = products.weight_grad(patches, rows, one_thread)
        conv.grads = {"weight": conv.weight_grad(weight), "bias": channel_sums(rows)}
        if not conv.needs_input_grad:
            return None
        # pool order (PH, PW, N, QH, QW, F) -> plain order (N, QH, PH, QW, PW, F)
        plain = memory.get("unpooled_plain", (n, qh, ph, qw, pw, f), dtype)
        plain[...] = rows.reshape(ph, pw, n, qh, qw, f).transpose(2, 3, 0, 4, 1, 5)
        plain = plain.reshape(n, qh * ph, qw * pw, f)
        return conv_input_grad(conv, plain, input_shape, memory, one_thread)
