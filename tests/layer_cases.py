"""The odd shapes every layer is checked on, and the nets every engine is checked on, shared by
the numerical, the PyTorch and the fast-path tests.

Each case: (id, layer factory, input shape (N, H, W, C) or (N, D)).
"""

from __future__ import annotations

import numpy as np

from scratchcnn import build
from scratchcnn.fast.convpool import ConvPoolOp
from scratchcnn.fast.ops import BatchNormOp
from scratchcnn.nn import (
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Sequential,
)

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


def make_conv_pool(case, dtype=np.float64, norm: bool = False, relu: bool = False) -> ConvPoolOp:
    """A fused conv (+ batch norm) (+ ReLU) + max-pool op of scratchcnn.fast; its ``layers``
    are the plain layers it computes, in an order that computes it. The batch norm gets one
    negative scale: max-pooling after it is then not max-pooling before it."""
    _, cin, cout, k, s, p, pool, _ = case
    conv = Conv2D(cin, cout, k, stride=s, padding=p, rng=np.random.default_rng(1), dtype=dtype)
    conv.params["bias"][...] = np.linspace(-0.5, 0.5, cout)
    batch_norm = None
    if norm:
        batch_norm = BatchNorm2D(cout, dtype=dtype)
        batch_norm.params["weight"][...] = np.linspace(-0.8, 1.5, cout)
        batch_norm.params["bias"][...] = np.linspace(0.3, -0.2, cout)
    return ConvPoolOp(
        conv,
        MaxPool2D(pool),
        norm=None if batch_norm is None else BatchNormOp(batch_norm),
        relu=ReLU() if relu else None,
    )


# -- user-style nets: what a learner builds, none of them a named architecture ------------------


def user_nets() -> dict[str, tuple[list, tuple[int, int, int]]]:
    """Layer lists and input shapes: padding, stride, 1x1 and 5x5 kernels, a conv with no pool
    after it, several convs in a row, batch norm in odd places, inputs that are not 28x28."""
    return {
        "pad5x5": (
            [
                Conv2D(1, 16, 5, padding=2),
                ReLU(),
                MaxPool2D(2),
                Conv2D(16, 32, 3, padding=1),
                ReLU(),
                MaxPool2D(2),
                Conv2D(32, 64, 3),
                ReLU(),
                Flatten(),
                Dense(1600, 10),
            ],
            (28, 28, 1),
        ),
        "stride-1x1-bn": (
            [
                Conv2D(1, 8, 3, stride=2, padding=1),  # 16x16 -> 8x8
                BatchNorm2D(8),
                ReLU(),
                Conv2D(8, 12, 1),  # 1x1
                ReLU(),
                Conv2D(12, 12, 3, padding=1),
                BatchNorm2D(12),
                ReLU(),
                MaxPool2D(2),  # 4x4, tiles: fused with the batch norm
                Flatten(),
                Dense(192, 32),
                BatchNorm1D(32),
                ReLU(),
                Dropout(0.3),
                Dense(32, 10),
            ],
            (16, 16, 1),
        ),
        "rgb-ragged-overlap": (
            [
                Conv2D(3, 6, (3, 2)),  # 13x10 -> 11x9
                ReLU(),
                MaxPool2D(2),  # ragged edge: 5x4
                Conv2D(6, 6, 2),  # 4x3
                BatchNorm2D(6),
                ReLU(),
                MaxPool2D(2, stride=1),  # overlapping: runs as the plain layer, 3x2
                Flatten(),
                Dropout(0.2),
                Dense(36, 10),
            ],
            (13, 10, 3),
        ),
    }


def make_net(name: str, seed: int = 3, dtype=np.float64) -> Sequential:
    if name in user_nets():
        layers, shape = user_nets()[name]
        return Sequential(layers, input_shape=shape, seed=seed, dtype=dtype)
    return build(name, seed=seed, dtype=dtype)


NETS = ["seed", "keras", "fast", "best", *user_nets()]


def no_effect_params(model: Sequential) -> set[str]:
    """Biases right before a batch norm: the norm removes the mean, so their gradient is 0
    and what either engine computes for it is rounding noise (~1e-16)."""
    names = set()
    for i, (layer, after) in enumerate(zip(model.layers[:-1], model.layers[1:], strict=True)):
        if isinstance(layer, (Conv2D, Dense)) and isinstance(after, (BatchNorm1D, BatchNorm2D)):
            names.add(f"{i}.bias")
    return names
