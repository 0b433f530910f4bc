"""Training: named nets, recipes, schedules, augmentation, and the loop that runs them."""

from .architectures import ARCHITECTURES, INPUT_SHAPE, build
from .augment import POLICIES, random_affine
from .classic import HandwrittenNumberClassification
from .recipes import RECIPES, Recipe, get_recipe
from .schedules import SCHEDULES, Schedule
from .trainer import EpochRecord, Trainer, TrainingInterruptedError, evaluate

__all__ = [
    "ARCHITECTURES",
    "INPUT_SHAPE",
    "POLICIES",
    "RECIPES",
    "SCHEDULES",
    "EpochRecord",
    "HandwrittenNumberClassification",
    "Recipe",
    "Schedule",
    "Trainer",
    "TrainingInterruptedError",
    "build",
    "evaluate",
    "get_recipe",
    "random_affine",
]
