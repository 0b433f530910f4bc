"""A small batch's inference pass, laid out once and replayed: ``Replay``.

One image (a drawing on the web page, a photo's few digits) is a pass of about twenty NumPy
calls of a microsecond or two each, and the ops spend as long again around them in Python:
checking shapes, finding their memory, making views and new arrays. So for a batch shape seen
before, the pass runs as a list of steps worked out at the first call, each a few NumPy calls
into memory laid out then:

    conv + norm + pool + ReLU   copy the input into the padded memory, gather the patches,
                                the weight into its matrix, one product, maximum, map, ReLU
                                (``inference.BatchMemory.run``: what the op itself runs)
    Flatten, Dropout            nothing: a view, and the identity in inference
    Dense                       x @ W^T into memory, + b
    batch norm (not fused)      x * scale + shift, from the running statistics
    ReLU                        mask, multiply

Each step reads the parameters when it runs, so training between two calls is seen; the
steps are the ops' own calls in the ops' order, so a replayed pass gives what the ops give,
to the last bit. A pass with any other op, or a batch that would run in chunks, is not
replayed. ``REPLAY_SHAPES = 0`` switches it off.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from ..nn.layers import Dense, Flatten, ReLU
from .channels import channelwise
from .inference import ConvInferenceOp
from .ops import BatchNormOp, DropoutOp, ReLUOp

# The batch shapes a model keeps a Replay for, at most (the oldest is dropped); 0 turns
# replays off.
REPLAY_SHAPES = 4


class Replay:
    """``Replay(ops, shape, dtype)``: the inference pass of ``ops`` over batches of input
    ``shape`` and ``dtype``, laid out as steps. ``Replay.build`` returns None for a pass it
    cannot lay out. Calling it runs the steps and returns a new array of logits. ``lock``: one
    call at a time (a server answers on several threads); the caller runs the ops when it is
    taken."""

    def __init__(self, ops: list, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.steps: list[Callable[[], object]] = []
        self.input = np.empty(shape, dtype)
        x = self.input
        for op in ops:
            x = self._add(op, x)
        self.output = x
        self.lock = threading.Lock()

    @classmethod
    def build(cls, ops: list, shape: tuple[int, ...], dtype: np.dtype) -> Replay | None:
        """The Replay of ``ops`` for batches of ``shape``, or None when an op is not one it
        lays out, a parameter is not of ``dtype``, or the batch would run in chunks."""
        try:
            return cls(ops, shape, np.dtype(dtype))
        except _NotReplayedError:
            return None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        np.copyto(self.input, x)
        for step in self.steps:
            step()
        return self.output.copy()  # the memory is the next call's

    def _add(self, op, x: np.ndarray) -> np.ndarray:
        """Append the steps of ``op`` on input memory ``x``; return its output memory."""
        layers = getattr(op, "layers", (op,))
        if any(p.dtype != x.dtype for layer in layers for p in layer.params.values()):
            raise _NotReplayedError
        if isinstance(op, ConvInferenceOp):
            return self._conv(op, x)
        if isinstance(op, Flatten):
            return x.reshape(len(x), -1)
        if isinstance(op, DropoutOp):
            return x  # the identity in inference
        if isinstance(op, Dense) and x.ndim == 2:
            op.output_shape(x.shape[1:])  # checks the input
            product = np.empty((len(x), op.out_features), x.dtype)
            out = np.empty_like(product)

            def dense() -> None:  # op.forward: x @ W.T + b
                np.matmul(x, op.params["weight"].T, out=product)
                np.add(product, op.params["bias"], out=out)

            self.steps.append(dense)
            return out
        if isinstance(op, (ReLU, ReLUOp)):
            mask, out = np.empty(x.shape, bool), np.empty_like(x)

            def relu() -> None:  # op.forward: x * (x > 0)
                np.greater(x, 0, out=mask)
                np.multiply(x, mask, out=out)

            self.steps.append(relu)
            return out
        if isinstance(op, BatchNormOp) and x.ndim == op.norm.rank + 1:
            op.norm.output_shape(x.shape[1:])  # checks the input
            out = np.empty_like(x)

            def norm() -> None:  # op.forward in inference: x * scale + shift
                scale, shift = op.affine()
                channelwise(np.multiply, x, scale, out=out)
                channelwise(np.add, out, shift, out=out)

            self.steps.append(norm)
            return out
        raise _NotReplayedError

    def _conv(self, op: ConvInferenceOp, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or not op.runs_whole(x.shape, x.itemsize):  # also checks the input
            raise _NotReplayedError
        op.output_shape(x.shape[1:])
        memory = op.new_memory(x.shape, x.dtype)

        def conv() -> None:
            np.copyto(memory.inside, x)
            memory.run(op.affine(), memory.output)

        self.steps.append(conv)
        return memory.output.reshape(memory.output_shape)


class _NotReplayedError(Exception):
    """A pass that ``Replay`` does not lay out."""


class Replays:
    """A model's Replays by batch shape and dtype, the last REPLAY_SHAPES of them (None for a
    shape whose pass is not replayed). Threads may ask at once: making one takes a lock."""

    def __init__(self) -> None:
        self._by_shape: dict[tuple, Replay | None] = {}
        self._lock = threading.Lock()

    def get(self, ops: list, x: np.ndarray) -> Replay | None:
        """The Replay for batches like ``x``, made now if need be."""
        if REPLAY_SHAPES < 1:
            return None
        key = (x.shape, x.dtype)
        try:
            return self._by_shape[key]
        except KeyError:
            pass
        with self._lock:
            if key not in self._by_shape:
                while self._by_shape and len(self._by_shape) >= REPLAY_SHAPES:
                    del self._by_shape[next(iter(self._by_shape))]  # the oldest
                self._by_shape[key] = Replay.build(ops, x.shape, x.dtype)
            return self._by_shape[key]
