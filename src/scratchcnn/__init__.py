"""scratchcnn: a convolutional neural network written from scratch in NumPy.

* ``scratchcnn.nn``        the engine a learner reads: layers, loss, optimizers, Sequential
* ``scratchcnn.fast``      ``compile(model)``: exact rewrites of a Sequential that run faster
* ``scratchcnn.training``  named nets, recipes, schedules, augmentation, the training loop
* ``scratchcnn.app``       Classifier, model files, photos, plots, the web page, the command line
* ``scratchcnn.data``      MNIST and Fashion-MNIST: found, downloaded, verified, batched
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402 - the version comes first: every part may ask for it
    DataError,
    DivergenceError,
    ImageError,
    InputError,
    ModelFileError,
    ScratchCNNError,
    ShapeError,
)
from .nn import (  # noqa: E402
    SGD,
    Adam,
    AdamW,
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Sequential,
    Softmax,
    SoftmaxCrossEntropy,
)
from .training import ARCHITECTURES, HandwrittenNumberClassification, build  # noqa: E402

__all__ = [
    "ARCHITECTURES",
    "SGD",
    "Adam",
    "AdamW",
    "BatchNorm1D",
    "BatchNorm2D",
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
    "__version__",
    "build",
]
