"""The odd shapes every layer is checked on, shared by the numerical and the PyTorch tests.

Each case: (id, layer factory, input shape (N, H, W, C) or (N, D)).
"""

from __future__ import annotations

import numpy as np

from scratchcnn.layers import BatchNorm2D, Conv2D, ConvPool, Dense, MaxPool2D

CONV_CASES = [
    # id,                               in, out, kernel, stride, padding, input (N, H, W, C)
    ("k3-batch1-nonsquare", 2, 3, 3, 1, 0, (1, 5, 7, 2)),
    ("k3-stride2-pad1", 3, 4, 3, 2, 1, (2, 7, 6, 3)),
    ("k5-pad2", 2, 2, 5, 1, 2, (2, 6, 5, 2)),
    ("k1-channels", 3, 5, 1, 1, 0, (2, 4, 3, 3)),
    ("k2x3-stride2x1-pad1x0", 2, 3, (2, 3), (2, 1), (1, 0), (1, 6, 5, 2)),
    ("k3-stride2-pad2-odd", 1, 2, 3, 2, 2, (3, 5, 5, 1)),
]

POOL_CASES = [
    # id,                      pool, stride, input (N, H, W, C)
    ("2x2-odd-size", 2, None, (2, 5, 7, 3)),
    ("3-stride2-overlap", 3, 2, (1, 7, 6, 2)),
    ("2-stride1-overlap", 2, 1, (2, 4, 5, 1)),
    ("2x3-stride1x2", (2, 3), (1, 2), (1, 5, 7, 2)),
    ("3-batch1", 3, None, (1, 6, 9, 1)),
]

CONV_POOL_CASES = [
    # id,                     in, out, kernel, stride, padding, pool, input (N, H, W, C)
    ("1ch-2x2-exact", 1, 3, 3, 1, 0, 2, (2, 6, 8, 1)),
    ("3ch-2x2-ragged", 3, 4, 3, 1, 0, 2, (1, 7, 6, 3)),
    ("stride2-pad1-pool3", 2, 3, 3, 2, 1, 3, (2, 9, 11, 2)),
    ("k2x3-pad-pool2x3", 2, 2, (2, 3), 1, (1, 0), (2, 3), (1, 6, 9, 2)),
    ("1ch-pool1", 1, 2, 3, 1, 1, 1, (1, 4, 5, 1)),
]

# With a batch norm between conv and pool, the pool must tile the conv output exactly.
CONV_NORM_POOL_CASES = [
    ("1ch-2x2", 1, 3, 3, 1, 0, 2, (2, 6, 8, 1)),
    ("3ch-stride2-pad1", 3, 4, 3, 2, 1, 2, (2, 7, 7, 3)),
    ("k2x3-pool2x3-batch1", 2, 2, (2, 3), 1, (1, 0), (2, 3), (1, 5, 8, 2)),
]

DENSE_CASES = [
    ("batch1", 7, 3, (1, 7)),
    ("batch4", 5, 6, (4, 5)),
]


def make_conv(case, dtype=np.float64) -> Conv2D:
    _, cin, cout, k, s, p, _ = case
    return Conv2D(cin, cout, k, stride=s, padding=p, rng=np.random.default_rng(1), dtype=dtype)


def make_pool(case) -> MaxPool2D:
    _, pool, stride, _ = case
    return MaxPool2D(pool, stride)


def make_dense(case, dtype=np.float64) -> Dense:
    _, din, dout, _ = case
    return Dense(din, dout, rng=np.random.default_rng(1), dtype=dtype)


def make_conv_pool(case, dtype=np.float64, norm: bool = False) -> ConvPool:
    """A fused conv (+ batch norm) + max-pool; its ``conv``, ``norm`` and ``pool`` are the
    unfused reference. The batch norm gets one negative scale: max-pooling after it is then
    not max-pooling before it."""
    _, cin, cout, k, s, p, pool, _ = case
    conv = Conv2D(cin, cout, k, stride=s, padding=p, rng=np.random.default_rng(1), dtype=dtype)
    conv.params["bias"][...] = np.linspace(-0.5, 0.5, cout)
    batch_norm = None
    if norm:
        batch_norm = BatchNorm2D(cout, dtype=dtype)
        batch_norm.params["weight"][...] = np.linspace(-0.8, 1.5, cout)
        batch_norm.params["bias"][...] = np.linspace(0.3, -0.2, cout)
    return ConvPool(conv, MaxPool2D(pool), norm=batch_norm)
