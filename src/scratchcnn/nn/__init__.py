"""The engine a learner reads: every forward and backward pass of a CNN in plain NumPy.

Reading order:

1. ``im2col.py``        a convolution as one matrix product (im2col, col2im)
2. ``layers/base.py``   what every layer does: forward, backward, params, grads
3. ``layers/conv.py``   Conv2D: im2col @ W, and its three gradients
4. ``layers/activation.py``, ``layers/pooling.py``, ``layers/flatten.py``, ``layers/dense.py``
                        ReLU, max-pool with its binary mask, flatten, the dense layer
5. ``losses.py``        softmax + cross-entropy and its gradient (p - y) / N
6. ``model.py``         Sequential: the layers in a row, forward and backward
7. ``optim.py``         SGD, Adam, AdamW
8. ``layers/normalization.py``, ``layers/dropout.py``   batch norm and dropout

Nothing here uses threads, reused buffers or any other speed trick: those live in
``scratchcnn.fast``, as exact rewrites of what is here.
"""

from .layers import (
    LAYER_TYPES,
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPool2D,
    ReLU,
    Softmax,
    softmax,
)
from .losses import SoftmaxCrossEntropy
from .model import Sequential
from .optim import OPTIMIZERS, SGD, Adam, AdamW, Optimizer, Parameter

__all__ = [
    "LAYER_TYPES",
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "AdamW",
    "BatchNorm1D",
    "BatchNorm2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "MaxPool2D",
    "Optimizer",
    "Parameter",
    "ReLU",
    "Sequential",
    "Softmax",
    "SoftmaxCrossEntropy",
    "softmax",
]
