"""The contract every layer keeps.

A layer is a small object with

* ``forward(x, training=True) -> y``: computes the output; in training it also caches exactly
  what ``backward`` needs (``self.save_for_backward(...)``). With ``training=False`` it caches
  nothing and leaves a pending training cache alone: a validation pass may sit between a
  training forward and its backward;
* ``backward(grad_out) -> grad_in``: given dL/dy, takes the cache back (``self.saved()``),
  fills ``self.grads`` (same keys as ``self.params``) with dL/dparam and returns dL/dx;
* ``params``: name -> array, updated in place by the optimizers;
* ``buffers``: name -> array, state that is saved but not trained (batch-norm statistics);
* ``output_shape(input_shape)``: the per-sample output shape, which also validates the input;
* ``config()``: the constructor's arguments as JSON-able values, so that a model file can
  rebuild the layer without pickle.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ...errors import ShapeError


class Layer:
    """Base class: a layer without parameters that passes shapes through."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        # Sequential clears this on its first layer: nobody needs dL/d(images).
        self.needs_input_grad = True
        self._saved: tuple | None = None

    # -- the interface ---------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-able: ``type(self)(**layer.config())`` is the same
        layer, freshly initialised."""
        return {}

    def reset_parameters(self, rng: np.random.Generator, relu_gain: bool = True) -> None:
        """Draw fresh parameters from ``rng`` (no-op for layers without parameters)."""

    # -- the cache between forward and backward ------------------------------------------------
    def save_for_backward(self, *values: Any) -> None:
        """Keep what ``backward`` will need (called by a training forward)."""
        self._saved = values

    def saved(self) -> tuple:
        """Take back what the last training forward kept; it can be used once."""
        if self._saved is None:
            raise RuntimeError(f"{self!r}.backward called without a training forward pass")
        values, self._saved = self._saved, None
        return values

    # -- dtypes --------------------------------------------------------------------------------
    def astype(self, dtype: np.dtype | type) -> Layer:
        """Cast parameters and buffers to ``dtype`` in place; returns ``self``."""
        for store in (self.params, self.buffers):
            for key, value in store.items():
                store[key] = value.astype(dtype)
        self.grads = {}
        return self

    @property
    def dtype(self) -> np.dtype:
        for value in self.params.values():
            return value.dtype
        return np.dtype(np.float32)

    def __call__(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        return self.forward(x, training)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def forward_through(layers: Iterable[Layer], x: np.ndarray, training: bool) -> np.ndarray:
    """Run ``x`` forward through ``layers`` in order."""
    for layer in layers:
        x = layer.forward(x, training)
    return x


def backward_through(layers: list[Layer], grad: np.ndarray | None) -> np.ndarray | None:
    """Back-propagate ``grad`` through ``layers`` in reverse order; returns dL/d(input)."""
    for layer in reversed(layers):
        grad = layer.backward(grad)
    return grad


def check_rank(x: np.ndarray, rank: int, layer: Layer, layout: str) -> None:
    """Raise a :class:`ShapeError` unless ``x`` is an array with ``rank`` axes."""
    if not isinstance(x, np.ndarray):
        raise ShapeError(f"{layer!r} expects a NumPy array, got {type(x).__name__}")
    if x.ndim != rank:
        raise ShapeError(f"{layer!r} expects a {rank}-D input {layout}, got shape {tuple(x.shape)}")


def as_int(value: object, name: str) -> int:
    """``value`` as an int; a bool, a fraction or a non-number raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not np.isfinite(value) or value != int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def he_std(fan_in: int) -> float:
    """He (Kaiming) normal standard deviation, for a layer followed by a ReLU."""
    return float(np.sqrt(2.0 / fan_in))


def glorot_std(fan_in: int, fan_out: int) -> float:
    """Glorot (Xavier) normal standard deviation, for a layer not followed by a ReLU."""
    return float(np.sqrt(2.0 / (fan_in + fan_out)))
