"""Named networks, built from the layers. Each builder takes the number of classes.

``seed``  - the classic from-scratch net: conv 8 3x3, ReLU, max-pool 2, flatten, dense 10.
``keras`` - the Keras MNIST example: conv 32 3x3, ReLU, pool, conv 64 3x3, ReLU, pool,
            flatten, dropout 0.5, dense 10.
``quick`` - the fast net at half the width (16 then 32 filters), no dropout: a minute's net.
``fast``  - the keras net with batch norm after each convolution: trains in fewer epochs.
``best``  - two conv-conv-pool blocks (32 then 64 filters) with batch norm, a 256-unit hidden
            layer with batch norm and dropout: the net of the 99.5% recipe.
``photo`` - best's four convolutions, dropout, and the classifier straight after them: 75,594
            parameters (about 300 KB), the model that ships in the package.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..nn import Sequential
from ..nn.layers import (
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPool2D,
    ReLU,
)

INPUT_SHAPE = (28, 28, 1)


def seed_net(num_classes: int = 10) -> list[Layer]:
    return [Conv2D(1, 8, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(13 * 13 * 8, num_classes)]


def keras_net(num_classes: int = 10) -> list[Layer]:
    return [
        Conv2D(1, 32, 3),
        ReLU(),
        MaxPool2D(2),
        Conv2D(32, 64, 3),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dropout(0.5),
        Dense(5 * 5 * 64, num_classes),
    ]


def conv_bn_relu(cin: int, cout: int, padding: int = 0) -> list[Layer]:
    return [Conv2D(cin, cout, 3, padding=padding), BatchNorm2D(cout), ReLU()]


def quick_net(num_classes: int = 10) -> list[Layer]:
    return [
        *conv_bn_relu(1, 16),
        MaxPool2D(2),
        *conv_bn_relu(16, 32),
        MaxPool2D(2),
        Flatten(),
        Dense(5 * 5 * 32, num_classes),
    ]


def fast_net(num_classes: int = 10) -> list[Layer]:
    return [
        *conv_bn_relu(1, 32),
        MaxPool2D(2),
        *conv_bn_relu(32, 64),
        MaxPool2D(2),
        Flatten(),
        Dropout(0.25),
        Dense(5 * 5 * 64, num_classes),
    ]


def best_net(num_classes: int = 10) -> list[Layer]:
    return [
        *conv_bn_relu(1, 32),  # 26x26
        *conv_bn_relu(32, 32),  # 24x24
        MaxPool2D(2),  # 12x12
        *conv_bn_relu(32, 64),  # 10x10
        *conv_bn_relu(64, 64),  # 8x8
        MaxPool2D(2),  # 4x4
        Flatten(),
        Dense(4 * 4 * 64, 256),
        BatchNorm1D(256),
        ReLU(),
        Dropout(0.4),
        Dense(256, num_classes),
    ]


def photo_net(num_classes: int = 10) -> list[Layer]:
    return [
        *conv_bn_relu(1, 32),  # 26x26
        *conv_bn_relu(32, 32),  # 24x24
        MaxPool2D(2),  # 12x12
        *conv_bn_relu(32, 64),  # 10x10
        *conv_bn_relu(64, 64),  # 8x8
        MaxPool2D(2),  # 4x4
        Flatten(),
        Dropout(0.3),
        Dense(4 * 4 * 64, num_classes),
    ]


ARCHITECTURES: dict[str, Callable[[int], list[Layer]]] = {
    "seed": seed_net,
    "keras": keras_net,
    "quick": quick_net,
    "fast": fast_net,
    "best": best_net,
    "photo": photo_net,
}


def build(
    name: str,
    seed: int | None = 0,
    num_classes: int = 10,
    dtype: type | np.dtype = np.float32,
) -> Sequential:
    """Build the named architecture for 28x28 grey images, initialised from ``seed``."""
    try:
        builder = ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {name!r}; choose one of: {known}") from None
    return Sequential(builder(num_classes), input_shape=INPUT_SHAPE, seed=seed, dtype=dtype)
