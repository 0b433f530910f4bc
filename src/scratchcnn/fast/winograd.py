"""Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for
Convolutional Neural Networks", 2015), for inference through a 3x3 convolution of stride 1
followed by a 2x2 max-pool of stride 2. Each pool window's 2x2 conv outputs come from the 4x4
input tile under it with 16 multiplications per (input channel, filter) pair instead of the
patch product's 4 x 9 = 36: 2.25x fewer.

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
run on it as they do on the patch products; no tile of a ragged pool edge is made.

Exact in real arithmetic, it rounds differently: the transforms add and subtract inputs
before the multiplications. In float64 the outputs agree with the plain layers' to about
1e-15 of their scale, in float32 to about 1e-6 (``tests/test_fast.py``). Inference keeps only
the maxima, so only their rounding moves; in training the pool's winner is judged on the conv
values, where another rounding could move a tie, so training keeps the patch products.

It pays where the products dominate (below). ``SCRATCHCNN_WINOGRAD=0`` in the environment
(or ``ENABLED = False``) switches it off.
"""

from __future__ import annotations

import os

import numpy as np

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
# channels (16, the bench's user net's second conv, timed no faster), in batches run in chunks.
# A batch small enough to run as one chunk (one image) keeps its memory and the patch product:
# Winograd timed slower there for the 32-channel layers and the keras and fast nets, faster
# only for a 64-channel layer (and the photo net, which has one).
MIN_CHANNELS = 32
# A chunk's M (16 x T x F values) is about this large (timed against other sizes: the same file).
CHUNK_BYTES = 1 << 20


def applies(conv: Conv2D, pool: tuple[int, int]) -> bool:
    """Whether ``conv`` followed by a max-pool of ``pool`` (stepped by its size) runs as
    Winograd F(2x2, 3x3) in inference (in a batch run in chunks)."""
    square = conv.kernel_size == (3, 3) and conv.stride == (1, 1) and tuple(pool) == (2, 2)
    return ENABLED and square and conv.in_channels >= MIN_CHANNELS


def chunk_samples(tiles: int, filters: int, itemsize: int) -> int:
    """How many samples of ``tiles`` pool windows each a chunk holds: M about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (16 * tiles * filters * itemsize))


class PooledWinograd:
    """``PooledWinograd(conv, dtype)``: a 3x3 conv of stride 1 as F(2x2, 3x3), its kernels
    transformed (U) for the call that makes it; ``maps`` turns chunks of padded input into
    the conv outputs of each 2x2 pool window."""

    def __init__(self, conv: Conv2D, dtype: np.dtype) -> None:
        c, f = conv.in_channels, conv.out_channels
        kernels = conv.weight_matrix().astype(dtype, copy=False).reshape(9, c * f)  # (i, j) rows
        self.u = (KERNEL_TRANSFORM.astype(dtype) @ kernels).reshape(16, c, f)
        self.tile_transform = TILE_TRANSFORM.astype(dtype)
        self.output_transform = OUTPUT_TRANSFORM.astype(dtype)

    def maps(self, xp: np.ndarray, out: np.ndarray, workspace: Workspace) -> np.ndarray:
        """The conv outputs of a padded input xp (N, HP, WP, C) in pool order, written to
        ``out`` (4, N*QH*QW*F: window offset, then sample, pooled pixel, filter), QH =
        (HP - 2) // 2. Temporaries come from ``workspace``."""
        n, hp, wp, c = xp.shape
        qh, qw, f, dtype = (hp - 2) // 2, (wp - 2) // 2, self.u.shape[2], xp.dtype
        tiles = n * qh * qw
        # d[u, v, n, q, r] = xp[n, 2q + u, 2r + v]: tile (q, r), position (u, v)
        s_n, s_h, s_w, s_c = xp.strides
        view = strided(xp, (4, 4, n, qh, qw, c), (s_h, s_w, s_n, 2 * s_h, 2 * s_w, s_c))
        d = workspace.get("tiles", view.shape, dtype)
        np.copyto(d, view)
        v = workspace.get("transformed_tiles", (16, tiles, c), dtype)
        np.matmul(self.tile_transform, d.reshape(16, -1), out=v.reshape(16, -1))
        m = workspace.get("tile_products", (16, tiles, f), dtype)
        np.matmul(v, self.u, out=m)
        return np.matmul(self.output_transform, m.reshape(16, -1), out=out.reshape(4, -1))
