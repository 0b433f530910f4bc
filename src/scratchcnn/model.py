"""``Sequential``: a stack of layers run forward in order and backward in reverse.

    logits = layer_L(... layer_2(layer_1(x)))            x (N, H, W, C)
    dL/dx_i = layer_i.backward(dL/dx_{i+1})              each layer fills its own grads

The model validates the whole chain of shapes when it is built, draws every parameter from one
seeded ``numpy.random.Generator`` (He init for layers that feed a ReLU, Glorot otherwise), and
tells its first layer not to compute the gradient of the images, which nobody needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import InputError, ModelFileError, ShapeError
from .layers import (
    BatchNorm2D,
    Conv2D,
    ConvPool,
    Dense,
    Dropout,
    Layer,
    MaxPool2D,
    ReLU,
    softmax,
)
from .layers.base import backward_through, forward_through
from .layers.fused import pool_tiles
from .losses import SoftmaxCrossEntropy
from .optim import Parameter
from .parallel import MIN_PART_VALUES, DropoutDraws, Replicas, blas_threads


class Sequential:
    """``Sequential(layers, input_shape=(28, 28, 1), seed=None, dtype=np.float32,
    workers=None)``."""

    def __init__(
        self,
        layers: Iterable[Layer],
        input_shape: Sequence[int] = (28, 28, 1),
        seed: int | None = None,
        dtype: type | np.dtype = np.float32,
        workers: int | None = None,
    ) -> None:
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("Sequential needs at least one layer")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.output_shapes = self._infer_shapes()
        self.execution_order = self._execution_order()
        for layer in self.layers:
            layer.needs_input_grad = True
        self.execution_order[0].needs_input_grad = False
        self.initialize(seed)
        self.astype(dtype)
        # Threads that each run a copy of the net on part of a batch (see parallel.py); the
        # default is one per BLAS thread. 1 runs every batch whole, in the calling thread.
        self.workers = blas_threads() if workers is None else int(workers)
        self._replicas: Replicas | None = None

    # -- construction ------------------------------------------------------------------------
    def _infer_shapes(self) -> list[tuple[int, ...]]:
        shapes, shape = [], self.input_shape
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ShapeError as err:
                raise ShapeError(f"layer {i} ({layer!r}): {err}") from None
            shapes.append(tuple(shape))
        return shapes

    def _execution_order(self) -> list[Layer]:
        """The layers in the order they run. Two rewrites, both exact:

        * a ReLU directly followed by a max-pool runs after it: max(relu(x)) = relu(max(x)),
          and so are the gradients (the first maximum of a window is the same before and after
          the ReLU unless it is <= 0, where the ReLU's gradient is 0 either way); the ReLU then
          touches a quarter of the values;
        * a Conv2D then directly followed by a max-pool whose stride is its size runs with it
          as one ``ConvPool`` (see ``layers/fused.py``); so does Conv2D, BatchNorm2D, max-pool
          when the pool tiles the conv output exactly.

        ``activations`` still runs every layer on its own, in declared order."""
        order = list(self.layers)
        i = 0
        while i < len(order) - 1:
            if isinstance(order[i], ReLU) and isinstance(order[i + 1], MaxPool2D):
                order[i], order[i + 1] = order[i + 1], order[i]
                i += 1
            i += 1
        shapes = zip(self.layers, self.output_shapes, strict=True)
        conv_shapes = {id(layer): shape for layer, shape in shapes}
        fused: list[Layer] = []
        for layer in order:
            tail = fused[-2:]
            if not (isinstance(layer, MaxPool2D) and layer.stride == layer.pool_size):
                fused.append(layer)
            elif tail and isinstance(tail[-1], Conv2D):
                fused[-1] = ConvPool(tail[-1], layer)
            elif (
                len(tail) == 2
                and isinstance(tail[0], Conv2D)
                and isinstance(tail[1], BatchNorm2D)
                and pool_tiles(conv_shapes[id(tail[0])], layer.pool_size)
            ):
                fused[-2:] = [ConvPool(tail[0], layer, norm=tail[1])]
            else:
                fused.append(layer)
        return fused

    def initialize(self, seed: int | None = None) -> None:
        """Draw all parameters afresh; the same seed always gives the same model.

        Dropout masks come from a second generator spawned from the same seed, kept in
        ``self.rng`` (its state goes into checkpoints so a resumed run draws the same masks).
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
        """Logits (N, classes) of a batch (N, H, W, C).

        A batch large enough to pay for it is split over ``self.workers`` threads (see
        ``parallel.py``); the result is the same but for rounding."""
        out = self.check_input(x)
        replicas = self._replicas_for(len(out))
        if training and self._replicas is not None:
            self._replicas.discard()  # this forward's backward is the one that counts
        if replicas is not None:
            return replicas.forward(out, training, self._dropout_draws() if training else None)
        return forward_through(self.execution_order, out, training)

    __call__ = forward

    def train_step(
        self, x: np.ndarray, labels: np.ndarray, loss: SoftmaxCrossEntropy
    ) -> tuple[float, np.ndarray]:
        """Forward in training mode, ``loss`` against ``labels`` (N,), and backward: returns
        the loss and the logits (N, classes), and leaves dL/dparam in the layers' ``grads``.

        The same as ``loss.forward(model.forward(x), labels); model.backward(loss.backward())``,
        except that a split batch goes to the threads once, not twice (see parallel.py)."""
        out = self.check_input(x)
        labels = np.asarray(labels)
        if labels.shape != (len(out),):
            raise ShapeError(f"expected {len(out)} labels, got shape {labels.shape}")
        replicas = self._replicas_for(len(out))
        if self._replicas is not None:
            self._replicas.discard()  # this step's backward is the one that counts
        if replicas is not None:
            return replicas.train_step(out, labels, loss, self._dropout_draws())
        logits = forward_through(self.execution_order, out, True)
        value = loss.forward(logits, labels)
        backward_through(self.execution_order, loss.backward())
        return value, logits

    def backward(self, grad_logits: np.ndarray) -> None:
        """Back-propagate dL/dlogits through every layer, filling each layer's ``grads``."""
        if self._replicas is not None and self._replicas.pending:
            self._replicas.backward(grad_logits)
            return
        backward_through(self.execution_order, grad_logits)

    def parallel_parts(self, n: int) -> list[slice]:
        """How a batch of ``n`` samples is split over the worker threads (see parallel.py);
        a single slice means it runs whole, in the calling thread."""
        replicas = self._replicas_for(n)
        return [slice(0, n)] if replicas is None else replicas.parts(n)

    def layers_of_part(self, index: int) -> list[Layer]:
        """The layers (in execution order) of the copy that runs part ``index`` of a split
        batch, for profiling; the copies exist once a split batch has run."""
        if self._replicas is None:
            raise RuntimeError("no batch has been split yet")
        return self._replicas.order_of(index)

    def _replicas_for(self, n: int) -> Replicas | None:
        """The replicas to split a batch of ``n`` over, or None to run it whole."""
        if self.workers < 2:
            return None
        if self._replicas is None or self._replicas.workers != self.workers:
            values = sum(int(np.prod(shape)) for shape in self.output_shapes)  # per sample
            min_part = -(-MIN_PART_VALUES // values)
            self._replicas = Replicas(self.layers, self.execution_order, self.workers, min_part)
        return self._replicas if len(self._replicas.parts(n)) > 1 else None

    def _dropout_draws(self) -> DropoutDraws:
        """Where a split batch's Dropout layers draw from: the generator an unsplit one uses,
        and each Dropout's input shape, so that the parts get the masks a whole batch would."""
        shapes = [self.input_shape, *self.output_shapes]
        return DropoutDraws(
            self.rng,
            {
                i: shapes[i]
                for i, layer in enumerate(self.layers)
                if isinstance(layer, Dropout) and layer.p > 0
            },
        )

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
        conv = next(layer for layer in self.layers if isinstance(layer, Conv2D))
        return conv, conv.params["weight"][:, 0]

    def predict_proba(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Class probabilities (N, classes), computed in batches in inference mode."""
        grey = self.input_shape[-1] == 1
        if isinstance(x, np.ndarray) and x.ndim == len(self.input_shape) and grey:
            x = x[..., None]  # (N, H, W) grey images: add the channel axis
        chunks = [
            softmax(self.forward(x[i : i + batch_size], training=False))
            for i in range(0, len(x), batch_size)
        ]
        if not chunks:
            return np.zeros((0,) + self.output_shapes[-1], dtype=self.dtype)
        return np.concatenate(chunks)

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Predicted class index (N,) for each sample."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

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
        """Copy arrays into the model; names and shapes must match exactly."""
        expected = {
            f"{i}.{key}": (layer, store, key)
            for i, layer in enumerate(self.layers)
            for store in (layer.params, layer.buffers)
            for key in store
        }
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ModelFileError(
                "parameters do not match the architecture"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unexpected: {', '.join(unexpected)}" if unexpected else "")
            )
        for name, (layer, store, key) in expected.items():
            value = np.asarray(state[name])
            if value.shape != store[key].shape:
                raise ModelFileError(
                    f"parameter {name} of {layer!r} has shape {value.shape}, "
                    f"expected {store[key].shape}"
                )
            if not np.isfinite(value).all():
                raise ModelFileError(f"parameter {name} contains NaN or infinite values")
            store[key][...] = value

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
