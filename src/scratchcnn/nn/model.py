"""``Sequential``: a stack of layers run forward in order and backward in reverse.

    logits  = layer_L(... layer_2(layer_1(x)))           x (N, H, W, C)
    dL/dx_i = layer_i.backward(dL/dx_{i+1})              each layer fills its own grads

The model checks the whole chain of shapes when it is built, draws every parameter from one
seeded ``numpy.random.Generator`` (He init for layers that feed a ReLU, Glorot otherwise), and
tells its first layer not to compute the gradient of the images, which nobody needs.

This is the plain engine: each layer runs exactly as its file reads. ``scratchcnn.fast.compile``
gives a faster twin of a model that shares its parameters and computes the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, ShapeError
from .layers import (
    Conv2D,
    Dense,
    Dropout,
    Layer,
    MaxPool2D,
    ReLU,
    layer_config,
    layer_from_config,
    softmax,
)
from .layers.base import backward_through, forward_through
from .losses import SoftmaxCrossEntropy
from .optim import Parameter


class Sequential:
    """``Sequential(layers, input_shape=(28, 28, 1), seed=None, dtype=np.float32)``."""

    def __init__(
        self,
        layers: Iterable[Layer],
        input_shape: Sequence[int] = (28, 28, 1),
        seed: int | None = None,
        dtype: type | np.dtype = np.float32,
    ) -> None:
        self.layers = list(layers)
        if not self.layers or not all(isinstance(layer, Layer) for layer in self.layers):
            raise ValueError("Sequential needs a list of one or more layers")
        self.input_shape = tuple(int(s) for s in input_shape)
        if not self.input_shape or min(self.input_shape) < 1:
            raise ShapeError(f"input shape must be positive sizes, got {self.input_shape}")
        self.output_shapes = self._infer_shapes()
        for layer in self.layers:
            layer.needs_input_grad = True
        self.layers[0].needs_input_grad = False
        self.initialize(seed)
        self.astype(dtype)

    def _infer_shapes(self) -> list[tuple[int, ...]]:
        shapes, shape = [], self.input_shape
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ShapeError as err:
                raise ShapeError(f"layer {i} ({layer!r}): {err}") from None
            shapes.append(tuple(shape))
        return shapes

    def initialize(self, seed: int | None = None) -> None:
        """Draw all parameters afresh; the same seed always gives the same model.

        Dropout masks come from a second generator spawned from the same seed, kept in
        ``self.rng`` (its state goes into checkpoints, so a resumed run draws the same masks).
        """
        init_rng, self.rng = np.random.default_rng(seed).spawn(2)
        for i, layer in enumerate(self.layers):
            if layer.params:
                layer.reset_parameters(init_rng, relu_gain=self._feeds_relu(i))
            if isinstance(layer, Dropout):
                layer.rng = self.rng

    def _feeds_relu(self, index: int) -> bool:
        for layer in self.layers[index + 1 :]:
            if isinstance(layer, ReLU):
                return True
            if isinstance(layer, (Conv2D, Dense)):
                return False
        return False

    def astype(self, dtype: type | np.dtype) -> Sequential:
        """Cast every parameter and buffer to ``dtype`` (float32 or float64) in place."""
        for layer in self.layers:
            layer.astype(dtype)
        self.dtype = np.dtype(dtype)
        return self

    # -- running -----------------------------------------------------------------------------
    def check_input(self, x: np.ndarray) -> np.ndarray:
        """Validate a batch (N, H, W, C) and cast it to the model's dtype."""
        if not isinstance(x, np.ndarray):
            raise InputError(f"model input must be a NumPy array, got {type(x).__name__}")
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(
                f"model expects a batch of shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )
        x = x.astype(self.dtype, copy=False)
        if not np.isfinite(x).all():
            raise InputError("model input contains NaN or infinite values")
        return x

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        """Logits (N, classes) of a batch (N, H, W, C)."""
        return forward_through(self.layers, self.check_input(x), training)

    __call__ = forward

    def backward(self, grad_logits: np.ndarray) -> None:
        """Back-propagate dL/dlogits through every layer, filling each layer's ``grads``."""
        backward_through(self.layers, grad_logits)

    def train_step(
        self, x: np.ndarray, labels: np.ndarray, loss: SoftmaxCrossEntropy
    ) -> tuple[float, np.ndarray]:
        """Forward in training mode, ``loss`` against ``labels`` (N,), and backward: returns
        the loss and the logits (N, classes), and leaves dL/dparam in the layers' ``grads``.
        The same as ``loss.forward(model.forward(x), labels); model.backward(loss.backward())``.
        """
        logits = self.forward(x, training=True)
        value = loss.forward(logits, labels)
        self.backward(loss.backward())
        return value, logits

    def predict_proba(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Class probabilities (N, classes) of a batch (N, H, W, C), in inference mode, in
        chunks of ``batch_size``."""
        chunks = [
            softmax(self.forward(x[i : i + batch_size], training=False))
            for i in range(0, len(x), batch_size)
        ]
        if not chunks:
            self.check_input(x)
            return np.zeros((0, *self.output_shapes[-1]), dtype=self.dtype)
        return np.concatenate(chunks)

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Predicted class index (N,) for each sample."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        """The output of every layer for a batch (N, H, W, C), in inference mode."""
        outputs, out = [], self.check_input(x)
        for layer in self.layers:
            out = layer.forward(out, training=False)
            outputs.append(out)
        return outputs

    def feature_map_layers(self) -> list[int]:
        """Indices of the layers whose outputs are the feature maps worth showing: the
        convolutions and the poolings."""
        return [i for i, layer in enumerate(self.layers) if isinstance(layer, (Conv2D, MaxPool2D))]

    def first_filters(self) -> tuple[Conv2D, np.ndarray]:
        """The first Conv2D and its kernels on the first input channel, (F, KH, KW)."""
        conv = next((layer for layer in self.layers if isinstance(layer, Conv2D)), None)
        if conv is None:
            raise ValueError("this model has no convolution")
        return conv, conv.params["weight"][:, 0]

    # -- parameters and state ----------------------------------------------------------------
    def parameters(self) -> list[Parameter]:
        """Handles on every trainable array, named ``"<layer index>.<name>"``."""
        return [
            Parameter(f"{i}.{key}", layer, key)
            for i, layer in enumerate(self.layers)
            for key in layer.params
        ]

    def num_parameters(self) -> int:
        return sum(p.value.size for p in self.parameters())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers as ``{"<layer index>.<name>": array}`` (copies)."""
        return {
            f"{i}.{key}": value.copy()
            for i, layer in enumerate(self.layers)
            for store in (layer.params, layer.buffers)
            for key, value in store.items()
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the model. Names and shapes must match exactly and values must be
        finite real numbers; otherwise a ValueError says what differs and nothing is changed."""
        expected = {
            f"{i}.{key}": (layer, store, key)
            for i, layer in enumerate(self.layers)
            for store in (layer.params, layer.buffers)
            for key in store
        }
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                "parameters do not match the architecture"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unexpected: {', '.join(unexpected[:5])}" if unexpected else "")
            )
        for name, (layer, store, key) in expected.items():
            value = np.asarray(state[name])
            if value.shape != store[key].shape:
                raise ValueError(
                    f"parameter {name} of {layer!r} has shape {value.shape}, "
                    f"expected {store[key].shape}"
                )
            if value.dtype.kind not in "fiu":
                raise ValueError(f"parameter {name} holds {value.dtype} values, not real numbers")
            if not np.isfinite(value).all():
                raise ValueError(f"parameter {name} contains NaN or infinite values")
        for name, (_, store, key) in expected.items():
            store[key][...] = state[name]

    def config(self) -> dict[str, Any]:
        """The architecture as JSON-able data: input shape and each layer's type and
        constructor arguments. ``Sequential.from_config(model.config())`` rebuilds it."""
        return {
            "input_shape": list(self.input_shape),
            "layers": [layer_config(layer) for layer in self.layers],
        }

    @classmethod
    def from_config(
        cls, config: Any, seed: int | None = None, dtype: type | np.dtype = np.float32
    ) -> Sequential:
        """The model :meth:`config` describes, freshly initialised; a malformed description
        raises ValueError (or ShapeError) with one line saying what is wrong."""
        if not isinstance(config, dict):
            raise ValueError("a model description must be a JSON object")
        shape, specs = config.get("input_shape"), config.get("layers")
        if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in shape
        ):
            raise ValueError(f"input_shape must be a list of integers, got {str(shape)[:60]}")
        if not isinstance(specs, list) or not specs:
            raise ValueError("a model description needs a non-empty list of layers")
        layers = []
        for i, spec in enumerate(specs):
            try:
                layers.append(layer_from_config(spec))
            except ValueError as err:
                raise ValueError(f"layer {i}: {err}") from None
        return cls(layers, input_shape=shape, seed=seed, dtype=dtype)

    def summary(self) -> str:
        """A table a person reads: each layer, its output shape and parameter count."""
        rows = [("Layer", "Output shape", "Params"), ("Input", str(self.input_shape), "")]
        for layer, shape in zip(self.layers, self.output_shapes, strict=True):
            count = sum(v.size for v in layer.params.values())
            rows.append((repr(layer), str(shape), f"{count:,}" if count else "-"))
        widths = [max(len(row[c]) for row in rows) for c in range(3)]
        line = "-" * (sum(widths) + 6)

        def fmt(row: tuple[str, str, str]) -> str:
            return f"{row[0]:<{widths[0]}}   {row[1]:<{widths[1]}}   {row[2]:>{widths[2]}}"

        body = [fmt(rows[0]), line] + [fmt(r) for r in rows[1:]] + [line]
        body.append(f"Total parameters: {self.num_parameters():,}  ({self.dtype.name})")
        return "\n".join(body)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential(\n  {inner}\n)"
