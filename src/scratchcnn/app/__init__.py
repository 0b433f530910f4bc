"""The application: what the command line and the web page are thin shells over.

``Classifier`` (train, evaluate, predict, save, load any net), model files and checkpoints,
photo preprocessing (``photos``), figures (``plots``), the web page (``server``), the
benchmark (``bench``) and the command line (``cli``). The names below are the public API the
command line and the server use; they import nothing from the engine directly.
"""

from ..fast import keep_freed_memory
from ..nn import OPTIMIZERS
from ..training import (
    ARCHITECTURES,
    POLICIES,
    RECIPES,
    SCHEDULES,
    Recipe,
    TrainingInterruptedError,
    get_recipe,
)
from .classifier import CUSTOM, Classifier, default_model
from .modelfile import Checkpoint, load_arrays, read_checkpoint, save_arrays

__all__ = [
    "ARCHITECTURES",
    "CUSTOM",
    "OPTIMIZERS",
    "POLICIES",
    "RECIPES",
    "SCHEDULES",
    "Checkpoint",
    "Classifier",
    "Recipe",
    "TrainingInterruptedError",
    "get_recipe",
    "load_arrays",
    "read_checkpoint",
    "save_arrays",
    "default_model",
    "keep_freed_memory",
]
