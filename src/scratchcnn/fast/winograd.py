"""Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for
Convolutional Neural Networks", 2015) for a 3x3 convolution of stride 1 followed by a 2x2
max-pool of stride 2: in inference (``inference.py``) and in the backward pass of training
(``convpool.py``). Each pool window's 2x2 conv outputs come from the 4x4 input tile under it
with 16 multiplications per (input channel, filter) pair instead of the patch product's
4 x 9 = 36: 2.25x fewer.

For one channel pair, with d a 4x4 input tile and g the 3x3 kernel:

    Y (2x2) = A^T [ (G g G^T) * (B^T d B) ] A          (* element by element)

Over C input channels and F filters the element-wise products, summed over the channels,
become 16 matrix products, one for each of the 16 positions (xi, nu) of a transformed tile:

    U    = (G (x) G) g              (16, C, F)   the kernels transformed, once a call
    V    = (B^T (x) B^T) d          (16, T, C)   a chunk's T tiles transformed
    M[p] = V[p] @ U[p]              (16, T, F)   16 products, T x C by C x F
    Y    = (A^T (x) A^T) M          (4, T, F)    each tile's 2x2 conv outputs

with (x) the Kronecker product: a 16 x 16 (or 4 x 16, 16 x 9) matrix applied to a tile's 16
values in one product. Y comes out in the order of the maps in ``inference.py`` (window
offset, tile = pooled pixel, filter), so the maximum, a batch norm's affine map and the ReLU
run on it as they do on the patch products; no tile of a ragged pool edge is made. The
backward pass is each of those linear steps transposed, in reverse (``backward``).

Exact in real arithmetic, it rounds differently: the transforms add and subtract inputs
before the multiplications. In float64 the results agree with the plain layers' to about
1e-15 of their scale, in float32 to about 1e-6 (``tests/test_fast.py``). Inference keeps only
the maxima, so only their rounding moves. In training the forward pass keeps the patch
products: the pool's winner is judged on the conv values, where another rounding could move
a tie; the backward pass has no choice to make (the winners are the forward's), so there the
gradients move by rounding only.

It pays where the products dominate (below). ``SCRATCHCNN_WINOGRAD=0`` in the environment
(or ``ENABLED = False``) switches it off.
"""

from __future__ import annotations

import os

import numpy as np

from ..nn.im2col import col2im
from ..nn.layers import Conv2D
from .patches import strided
from .workspace import Workspace

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])  # (4, 3)
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)  # (4, 4)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)  # (2, 4)
KERNEL_TRANSFORM = np.kron(G, G)  # (16, 9): a kernel's 9 values -> its 16 transformed ones
TILE_TRANSFORM = np.kron(B_T, B_T)  # (16, 16): an input tile's 16 values -> V
OUTPUT_TRANSFORM = np.kron(A_T, A_T)  # (4, 16): M -> the tile's 2x2 outputs, row-major

ENABLED = os.environ.get("SCRATCHCNN_WINOGRAD", "1") != "0"
# It pays where the products dominate (benchmarks/results/winograd.txt): from 32 input
# channels (16, the bench's user net's second conv, timed no faster in inference there; its
# training backward, timed by hand, not in that file, went 1.03x on the default path).
# In inference, in batches run in chunks. A batch small enough to run as one chunk (one image)
# keeps its memory and the patch product: at batch 1 Winograd was faster in some runs and
# slower in others, for single layers and whole nets alike (four runs of that file's script),
# so the simpler path stays. In training, where BLAS runs on one thread (``convpool.py``).
MIN_CHANNELS = 32
# A chunk's M (16 x T x F values) is about this large (timed against other sizes: the same file).
CHUNK_BYTES = 1 << 20


def applies(conv: Conv2D, pool: tuple[int, int]) -> bool:
    """Whether ``conv`` followed by a max-pool of ``pool`` (stepped by its size) may run as
    Winograd F(2x2, 3x3)."""
    square = conv.kernel_size == (3, 3) and conv.stride == (1, 1) and tuple(pool) == (2, 2)
    return ENABLED and square and conv.in_channels >= MIN_CHANNELS


def chunk_samples(tiles: int, filters: int, itemsize: int) -> int:
    """How many samples of ``tiles`` pool windows each a chunk holds: M about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (16 * tiles * filters * itemsize))


class PooledWinograd:
    """``PooledWinograd(conv, dtype)``: a 3x3 conv of stride 1 as F(2x2, 3x3), its kernels
    transformed (U) as they are when it is made (a forward pass makes one, and its backward
    uses the same); ``maps`` turns chunks of padded input into the conv outputs of each 2x2
    pool window, ``backward`` gives the gradients of a whole batch's maps."""

    def __init__(self, conv: Conv2D, dtype: np.dtype) -> None:
        c, f = conv.in_channels, conv.out_channels
        kernels = conv.weight_matrix().astype(dtype, copy=False).reshape(9, c * f)  # (i, j) rows
        self.kernel_transform = KERNEL_TRANSFORM.astype(dtype)
        self.u = (self.kernel_transform @ kernels).reshape(16, c, f)
        self.tile_transform = TILE_TRANSFORM.astype(dtype)
        self.output_transform = OUTPUT_TRANSFORM.astype(dtype)

    def transformed_tiles(self, xp: np.ndarray, workspace: Workspace) -> np.ndarray:
        """V (16, N*QH*QW, C): the 4x4 input tiles of a padded input xp (N, HP, WP, C), one
        under each 2x2 pool window, transformed. Memory from ``workspace``."""
        n, hp, wp, c = xp.shape
        qh, qw, dtype = (hp - 2) // 2, (wp - 2) // 2, xp.dtype
        # d[u, v, n, q, r] = xp[n, 2q + u, 2r + v]: tile (q, r), position (u, v)
        s_n, s_h, s_w, s_c = xp.strides
        view = strided(xp, (4, 4, n, qh, qw, c), (s_h, s_w, s_n, 2 * s_h, 2 * s_w, s_c))
        d = workspace.get("tiles", view.shape, dtype)
        np.copyto(d, view)
        v = workspace.get("transformed_tiles", (16, n * qh * qw, c), dtype)
        return np.matmul(self.tile_transform, d.reshape(16, -1), out=v.reshape(16, -1))

    def maps(self, xp: np.ndarray, out: np.ndarray, workspace: Workspace) -> np.ndarray:
        """The conv outputs of a padded input xp (N, HP, WP, C) in pool order, written to
        ``out`` (4, N*QH*QW*F: window offset, then sample, pooled pixel, filter), QH =
        (HP - 2) // 2. Temporaries come from ``workspace``."""
        v = self.transformed_tiles(xp, workspace).reshape(16, -1, self.u.shape[1])
        m = workspace.get("tile_products", (16, len(v[0]), self.u.shape[2]), xp.dtype)
        np.matmul(v, self.u, out=m)
        return np.matmul(self.output_transform, m.reshape(16, -1), out=out.reshape(4, -1))

    def backward(
        self,
        xp: np.ndarray,
        grad_maps: np.ndarray,
        workspace: Workspace,
        input_shape: tuple[int, ...] | None = None,
        padding: tuple[int, int] = (0, 0),
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The gradients of ``maps``: from dL/d(maps) (4, N*QH*QW*F, in pool order) and the
        padded input xp it was computed from, dL/dW as a (9*C, F) matrix (``weight_matrix``'s
        layout) and, given the unpadded ``input_shape``, dL/dx (N, H, W, C). Each step of
        ``maps`` is linear, so its gradient is its transpose, in the reverse order:

            dM = (A^T (x) A^T)^T dY     dU[p] = V[p]^T @ dM[p]     dW = (G (x) G)^T dU
            dV[p] = dM[p] @ U[p]^T      dd = (B^T (x) B^T)^T dV    dx = the tiles' dd summed
                                                                    back onto the input grid
        It runs a few samples at a time (chunk_samples), so that each transform works in
        cache; dU is summed over the chunks."""
        (n, hp, wp, c), f, dtype = xp.shape, self.u.shape[2], xp.dtype
        qh, qw = (hp - 2) // 2, (wp - 2) // 2
        by_offset = grad_maps.reshape(4, n, qh * qw * f)
        du = np.zeros((16, c, f), dtype)
        du_chunk = np.empty_like(du)
        grad_in = None if input_shape is None else np.empty(input_shape, dtype)
        step = chunk_samples(qh * qw, f, xp.itemsize)
        for i in range(0, n, step):
            m = min(step, n - i)
            v = self.transformed_tiles(xp[i : i + m], workspace).reshape(16, -1, c)
            dm = workspace.get("tile_grads", (16, len(v[0]), f), dtype)
            np.matmul(
                self.output_transform.T,
                by_offset[:, i : i + m].reshape(4, -1),
                out=dm.reshape(16, -1),
            )
            np.add(du, np.matmul(v.transpose(0, 2, 1), dm, out=du_chunk), out=du)
            if grad_in is None:
                continue
            dv = workspace.get("tile_input_grads", v.shape, dtype)
            np.matmul(dm, self.u.transpose(0, 2, 1), out=dv)
            dd = np.matmul(self.tile_transform.T, dv.reshape(16, -1), out=v.reshape(16, -1))
            tiles = dd.reshape(4, 4, m, qh, qw, c)  # V's memory: V is dead
            grad_in[i : i + m] = col2im(tiles, (m, *input_shape[1:]), (2, 2), padding)
        weight_grad = (self.kernel_transform.T @ du.reshape(16, -1)).reshape(9 * c, f)
        return weight_grad, grad_in
