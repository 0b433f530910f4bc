"""The exceptions scratchcnn raises on purpose; each carries one line a person can act on."""


class ScratchCNNError(Exception):
    """Base class: the command line prints ``str(error)`` on one line, never a traceback."""


class ShapeError(ScratchCNNError, ValueError):
    """An array has the wrong rank, channel count or size for a layer."""


class InputError(ScratchCNNError, ValueError):
    """Input values that cannot be used (NaN, inf)."""


class DivergenceError(ScratchCNNError, ArithmeticError):
    """The training loss became NaN or infinite."""


class DataError(ScratchCNNError, ValueError):
    """A data file is missing, corrupt, truncated or fails its checksum."""


class ModelFileError(ScratchCNNError, ValueError):
    """A model file is missing, truncated, foreign or does not match its architecture."""


class ImageError(ScratchCNNError, ValueError):
    """An image file cannot be read or holds no usable digit."""
