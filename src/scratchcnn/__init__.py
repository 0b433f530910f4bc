"""scratchcnn: a convolutional neural network written from scratch in NumPy.

Every forward and backward pass is in ``scratchcnn.layers``; ``Sequential`` stacks them,
``scratchcnn.optim`` updates them, and ``Classifier`` adds training, evaluation, saving and
prediction on images.
"""

from .architectures import ARCHITECTURES, build
from .classic import HandwrittenNumberClassification
from .errors import (
    DataError,
    DivergenceError,
    ImageError,
    InputError,
    ModelFileError,
    ScratchCNNError,
    ShapeError,
)
from .layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Softmax
from .losses import SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD, Adam, AdamW

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "SGD",
    "Adam",
    "AdamW",
    "Conv2D",
    "DataError",
    "Dense",
    "DivergenceError",
    "Dropout",
    "Flatten",
    "HandwrittenNumberClassification",
    "ImageError",
    "InputError",
    "MaxPool2D",
    "ModelFileError",
    "ReLU",
    "ScratchCNNError",
    "Sequential",
    "ShapeError",
    "Softmax",
    "SoftmaxCrossEntropy",
    "build",
]
