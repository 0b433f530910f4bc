"""Fast twins of single layers: each op computes exactly what its plain layer computes and puts
the gradients in that layer's ``grads`` (the optimizer reads them there), but spends less time
on memory:

* ``ConvOp``: patches gathered offset-major for one input channel (long copies instead of
  runs KH*KW values long); the input gradient as the plain layer's (one batched matmul, then
  col2im's KH*KW slab additions) into reused memory; its products cut into pieces where BLAS
  runs on one thread (``products.py``); the bias gradient as a matrix-vector
  product; training buffers reused from step to step;
* ``ReLUOp``: the mask's memory reused from step to step;
* ``BatchNormOp``: whole-sample per-channel passes (``channels.channelwise``), buffers reused,
  and sums that can be shared with the other parts of a batch split over threads (``sync``);
* ``DropoutOp``: uniforms drawn from a stream the worker threads can set, so that a split
  batch gets the masks the whole batch would.

Layers with nothing to gain (Dense, Flatten, Softmax, a max-pool that cannot be fused) run as
they are. The ops derive from ``nn``'s Layer for its forward/backward cache.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..nn.im2col import col2im
from ..nn.layers import BatchNorm1D, BatchNorm2D, Conv2D, Dropout, Layer, ReLU
from ..nn.layers.base import check_rank
from ..nn.layers.dropout import dropout_mask
from . import products
from .blas import blas_on_one_thread
from .channels import channel_sums, channelwise
from .patches import patch_matrix
from .workspace import FRESH_MEMORY, Workspace


class Op(Layer):
    """A fast op: ``layers`` are the plain layers it stands for, in an order that computes
    what it computes (the declared one, or with a ReLU and a max-pool exchanged)."""

    layers: tuple[Layer, ...] = ()

    def norm_ops(self) -> list[BatchNormOp]:
        """The batch norms inside this op (their sums are shared across threads)."""
        return []

    def __repr__(self) -> str:
        return " + ".join(repr(layer) for layer in self.layers)


def conv_input_grad(
    conv: Conv2D,
    grad_out: np.ndarray,
    input_shape: tuple[int, ...],
    workspace: Workspace,
    one_thread: bool = False,
) -> np.ndarray:
    """dL/dx (input_shape) of ``conv`` from a C-contiguous dL/dy (N, OH', OW', F), as
    ``Conv2D.input_grad`` computes it: its products in memory reused from step to step, cut
    into pieces where BLAS runs on ``one_thread`` (``products.py``), then col2im."""
    n, oh, ow, f = grad_out.shape
    (kh, kw), c = conv.kernel_size, conv.in_channels
    slabs = workspace.get("patch_grads", (kh * kw, n * oh * ow, c), grad_out.dtype)
    products.matmul(grad_out.reshape(-1, f), conv.offset_weights(), slabs, one_thread)
    return col2im(slabs.reshape(kh, kw, n, oh, ow, c), input_shape, conv.stride, conv.padding)


class ConvOp(Op):
    """A Conv2D (see the module's docstring)."""

    def __init__(self, conv: Conv2D) -> None:
        super().__init__()
        self.conv, self.layers = conv, (conv,)
        self.workspace = Workspace()

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        conv = self.conv
        check_rank(x, 4, conv, "(N, H, W, C)")
        oh, ow, f = conv.output_shape(x.shape[1:])
        x = x.astype(conv.dtype, copy=False)
        memory = self.workspace if training else FRESH_MEMORY
        patches = patch_matrix(x, conv.kernel_size, conv.stride, conv.padding, workspace=memory)
        one_thread = blas_on_one_thread()
        out = np.empty((len(x), oh, ow, f), x.dtype)
        products.matmul(patches, conv.weight_matrix(), out.reshape(-1, f), one_thread)
        channelwise(np.add, out, conv.params["bias"], out=out)
        if training:
            self.save_for_backward(patches, x.shape, one_thread)
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        patches, input_shape, one_thread = self.saved()
        conv = self.conv
        g = np.ascontiguousarray(grad_out, dtype=patches.dtype)
        rows = g.reshape(-1, conv.out_channels)
        weight = products.weight_grad(patches, rows, one_thread)
        conv.grads = {"weight": conv.weight_grad(weight), "bias": channel_sums(rows)}
        if not conv.needs_input_grad:
            return None
        return conv_input_grad(conv, g, input_shape, self.workspace, one_thread)


class ReLUOp(Op):
    """A ReLU whose mask keeps its memory from step to step."""

    def __init__(self, relu: ReLU) -> None:
        super().__init__()
        self.layers = (relu,)
        self.workspace = Workspace()

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        mask = (self.workspace if training else FRESH_MEMORY).get("mask", x.shape, bool)
        np.greater(x, 0, out=mask)
        if training:
            self.save_for_backward(mask)
        return np.multiply(x, mask)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        (mask,) = self.saved()
        return np.multiply(grad_out, mask)


class BatchNormOp(Op):
    """A BatchNorm2D or BatchNorm1D. ``sync``, when set (by the worker threads), sums
    per-channel arrays over every part of a split batch, and says whether this part is the
    ``leader`` that updates the running statistics the parts share."""

    def __init__(self, norm: BatchNorm1D | BatchNorm2D) -> None:
        super().__init__()
        self.norm, self.layers = norm, (norm,)
        self.workspace = Workspace()
        self.sync = None
        # Set by the plan where the op before hands over a new array that nothing else holds
        # (a ConvOp's output), and where the op after does so with its gradient (a ReLU's or a
        # max-pool's): the norm may then write over it instead of into new memory.
        self.owns_input = self.owns_grad = False

    def norm_ops(self) -> list[BatchNormOp]:
        return [self]

    def _whole_batch(self, sums: np.ndarray) -> np.ndarray:
        """Per-channel sums over this part of the batch -> over the whole batch."""
        return sums if self.sync is None else self.sync.total(sums)

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """The norm at inference as x * scale + shift: per-channel (C,) ``scale`` and ``shift``
        from the running statistics."""
        norm = self.norm
        scale = norm.params["weight"] / np.sqrt(norm.buffers["running_var"] + norm.eps)
        return scale, norm.params["bias"] - norm.buffers["running_mean"] * scale

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if not training:
            scale, shift = self.affine()
            out = channelwise(np.multiply, self._checked(x), scale)
            return channelwise(np.add, out, shift, out=out)
        xhat = self.standardize(x, overwrite=self.owns_input)
        out = channelwise(np.multiply, xhat, self.norm.params["weight"])
        return channelwise(np.add, out, self.norm.params["bias"], out=out)

    def _checked(self, x: np.ndarray) -> np.ndarray:
        norm = self.norm
        if not isinstance(x, np.ndarray) or x.ndim != norm.rank + 1:
            raise ShapeError(f"{norm!r} expects a batch (N, {norm.layout[1:]}, got {np.shape(x)}")
        norm.output_shape(x.shape[1:])
        return x.astype(norm.dtype, copy=False)

    def standardize(self, x: np.ndarray, overwrite: bool = False) -> np.ndarray:
        """The first half of a training forward: xhat = (x - mean) / std over the batch (the
        whole batch, when it is split over threads), saved for backward; the running
        statistics move. ``overwrite``: xhat may take x's memory (a caller's own buffer of the
        norm's dtype, dead after this). The caller applies gamma and beta (``forward``, or a
        fused op slab by slab)."""
        norm = self.norm
        x = self._checked(x)
        c = norm.num_features
        flat = x.reshape(-1, c)
        sums_and_count = self._whole_batch(np.append(channel_sums(flat), len(flat)))
        count = int(sums_and_count[-1])
        mean = (sums_and_count[:-1] / count).astype(x.dtype)
        # Two passes for the variance (mean first, then squared deviations): one pass with
        # E[x^2] - mean^2 loses float32 digits when |mean| is large against the spread.
        memory = x if overwrite else self.workspace.get("xhat", x.shape, x.dtype)
        xhat = channelwise(np.subtract, x, mean, out=memory)
        flat_hat = xhat.reshape(-1, c)
        var = (self._whole_batch(np.einsum("ij,ij->j", flat_hat, flat_hat)) / count).astype(x.dtype)
        inv_std = (1.0 / np.sqrt(var + norm.eps)).astype(x.dtype)
        channelwise(np.multiply, xhat, inv_std, out=xhat)
        if self.sync is None or self.sync.leader:
            norm.update_running_stats(mean, var, count)
        self.save_for_backward(xhat, inv_std, count)
        return xhat

    def backward(self, grad_out: np.ndarray, overwrite: bool | None = None) -> np.ndarray:
        """dL/dx from dL/dy; ``overwrite``: the result may take dL/dy's memory (a caller's
        own buffer, dead after this; default: ``owns_grad``)."""
        overwrite = self.owns_grad if overwrite is None else overwrite
        xhat, inv_std, count = self.saved()
        c = self.norm.num_features
        g = np.ascontiguousarray(grad_out, dtype=xhat.dtype)
        flat_g, flat_hat = g.reshape(-1, c), xhat.reshape(-1, c)
        grad_beta = channel_sums(flat_g)
        grad_gamma = np.einsum("ij,ij->j", flat_g, flat_hat)
        self.norm.grads = {"weight": grad_gamma, "bias": grad_beta}  # of this part, if split
        sum_g, sum_g_hat = np.split(self._whole_batch(np.concatenate([grad_beta, grad_gamma])), 2)
        scale = self.norm.params["weight"] * inv_std
        # scale * (G - mean(G)) - xhat * scale * mean(G * xhat), in whole-sample passes
        grad = channelwise(np.subtract, g, sum_g / count, out=g if overwrite else None)
        channelwise(np.multiply, grad, scale, out=grad)
        # xhat is used up here (``saved`` hands it out once): the correction takes its memory
        correction = channelwise(np.multiply, xhat, scale * sum_g_hat / count, out=xhat)
        np.subtract(grad, correction.reshape(grad.shape), out=grad)
        return grad


class DropoutOp(Op):
    """A Dropout that draws its uniforms from ``stream`` when the worker threads set one for
    this step (see ``parallel.dropout_streams``), else from the layer's own generator.
    ``sample_shape`` is one sample's input shape."""

    def __init__(self, dropout: Dropout, sample_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.dropout, self.layers = dropout, (dropout,)
        self.sample_shape = tuple(sample_shape)
        self.stream = None

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if not training:
            return x
        p = self.dropout.p
        if p == 0.0:
            self.save_for_backward(None)
            return x
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        source, self.stream = self.stream or self.dropout.rng, None
        mask = dropout_mask(source.random(x.shape, dtype=dtype), p)
        self.save_for_backward(mask)
        return x * mask

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        (mask,) = self.saved()
        return grad_out if mask is None else grad_out * mask
