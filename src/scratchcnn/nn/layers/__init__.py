"""The layers, one family per module. Read them in this order: ``base`` (the contract),
``conv``, ``activation``, ``pooling``, ``flatten``, ``dense``, then ``normalization`` and
``dropout``.

``LAYER_TYPES`` names every layer class, so that a model file can store a net as a list of
``{"type": name, **layer.config()}`` and rebuild it with :func:`layer_from_config`.
"""

from __future__ import annotations

import inspect
from typing import Any

from .activation import ReLU, Softmax, softmax
from .base import Layer
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .flatten import Flatten
from .normalization import BatchNorm1D, BatchNorm2D
from .pooling import MaxPool2D

LAYER_TYPES: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (Conv2D, ReLU, MaxPool2D, Flatten, Dense, BatchNorm2D, BatchNorm1D, Dropout, Softmax)
}


def layer_config(layer: Layer) -> dict[str, Any]:
    """``{"type": "Conv2D", "in_channels": 1, ...}``: what :func:`layer_from_config` takes."""
    name = type(layer).__name__
    if LAYER_TYPES.get(name) is not type(layer):
        raise ValueError(f"{name} is not one of the library's layers; it cannot be saved by name")
    return {"type": name, **layer.config()}


def layer_from_config(spec: Any) -> Layer:
    """A fresh layer from :func:`layer_config`'s dict. Anything else - an unknown type, an
    argument the constructor does not take, a value that is not a number or a pair of
    numbers, an out-of-range value - raises ValueError with one line saying what."""
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ValueError(f'a layer must be {{"type": <name>, ...}}, got {str(spec)[:80]}')
    cls = LAYER_TYPES.get(spec["type"])
    if cls is None:
        raise ValueError(f"unknown layer type {spec['type'][:40]!r}")
    args = {k: v for k, v in spec.items() if k != "type"}
    accepted = set(inspect.signature(cls).parameters) - {"rng", "dtype"}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ValueError(f"{cls.__name__} takes no argument {unknown[0][:40]!r}")
    for key, value in args.items():
        numbers = value if isinstance(value, list) and len(value) == 2 else [value]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            raise ValueError(f"{cls.__name__}: {key} must be a number or a pair, got {value!r}")
    try:
        return cls(**args)
    except TypeError as err:  # a required argument is missing
        raise ValueError(f"{cls.__name__}: {err}") from None


__all__ = [
    "LAYER_TYPES",
    "BatchNorm1D",
    "BatchNorm2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "MaxPool2D",
    "ReLU",
    "Softmax",
    "layer_config",
    "layer_from_config",
    "softmax",
]
