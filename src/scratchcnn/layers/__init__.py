"""The layers: one family per module, each with ``forward``/``backward``/``params``/``grads``."""

from .activation import ReLU, Softmax, softmax
from .base import Layer
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .fused import ConvPool
from .normalization import BatchNorm1D, BatchNorm2D
from .pooling import MaxPool2D
from .shape import Flatten

__all__ = [
    "BatchNorm1D",
    "BatchNorm2D",
    "Conv2D",
    "ConvPool",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "MaxPool2D",
    "ReLU",
    "Softmax",
    "softmax",
]
