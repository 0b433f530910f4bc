"""``compile(model)``: a fast twin of a Sequential that shares its parameters.

    fast = scratchcnn.fast.compile(model)        # nothing is copied: same parameter arrays
    loss_value, logits = fast.train_step(x, labels, loss)   # gradients land in model's layers
    optimizer.step()                             # the optimizer made from model.parameters()
    fast.predict_proba(x)

It runs the plan of ``plan.py`` (fused conv + pool, ReLU after the pool, fast ops; in inference
conv + batch norm + pool + ReLU as one op, ``inference.py``) and splits a large enough batch
over worker threads (``parallel.py``), or over child processes once batches have run long
enough to be worth starting them (``processes.py``). It never changes the math: outputs,
losses and gradients are the plain model's but for the order in which sums are rounded (the
tests hold them to 1e-9 relative in float64), and max-pool ties go to the same winner.
``model`` itself stays the plain engine: calling it runs every layer as its file reads.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import ShapeError
from ..nn import Layer, Sequential, SoftmaxCrossEntropy, softmax
from ..nn.layers.base import backward_through, forward_through
from .blas import blas_threads
from .parallel import MIN_PART_VALUES, Replicas, samples_holding
from .plan import inference_plan, plan
from .processes import SUPPORTED, Processes
from .replay import Replays


class CompiledModel:
    """The object :func:`compile` returns: ``forward``, ``backward``, ``train_step``,
    ``predict_proba`` and ``predict`` with the signatures and results of ``Sequential``'s.
    ``workers`` threads share a batch (1: every batch runs whole, in the calling thread);
    ``processes``: whether large batches may go to workers - 1 child processes instead
    (default: yes on POSIX, unless SCRATCHCNN_PROCESSES=0)."""

    def __init__(
        self, model: Sequential, workers: int | None = None, processes: bool | None = None
    ) -> None:
        if not isinstance(model, Sequential):
            raise TypeError(f"compile() takes a Sequential, not {type(model).__name__}")
        self.model = model
        self.workers = blas_threads() if workers is None else max(1, int(workers))
        if processes is None:
            processes = os.environ.get("SCRATCHCNN_PROCESSES", "1") != "0"
        self._processes = (
            Processes(model, self.workers) if processes and SUPPORTED and self.workers > 1 else None
        )
        self._signature: list[int] = []
        self._ops: dict[bool, list[Layer]] = {}  # training -> its plan
        self._replicas: dict[bool, Replicas] = {}  # training -> the copies of its plan
        self._replays = Replays()  # small inference batches, laid out once (replay.py)

    def _plan(self, training: bool) -> list[Layer]:
        """The ops of a training or an inference pass (both rebuilt when the model's
        parameter arrays were replaced, e.g. by ``model.astype``)."""
        signature = [id(a) for layer in self.model.layers for a in layer.params.values()]
        if signature != self._signature or not self._ops:
            self._signature, self._replicas, self._replays = signature, {}, Replays()
            if self._processes is not None:
                self._processes.close()  # its ops were planned for the old arrays
            self._ops = {True: plan(self.model), False: inference_plan(self.model)}
        return self._ops[training]

    @property
    def ops(self) -> list[Layer]:
        """The ops a training pass runs, in order."""
        return self._plan(True)

    @property
    def inference_ops(self) -> list[Layer]:
        """The ops an inference pass runs, in order."""
        return self._plan(False)

    def describe(self) -> str:
        """One line per op: what runs, and which plain layers it computes, in training and
        in inference."""
        lines = ["training:"] + [f"  {type(op).__name__:<16} {op!r}" for op in self.ops]
        lines += ["inference:"] + [f"  {type(op).__name__:<16} {op!r}" for op in self.inference_ops]
        return "\n".join(lines)

    # -- running ---------------------------------------------------------------------------
    def _replicas_for(self, n: int, training: bool = True) -> Replicas | None:
        """The replicas to split a batch of ``n`` over, or None to run it whole."""
        ops = self._plan(training)
        if self.workers < 2:
            return None
        replicas = self._replicas.get(training)
        if replicas is None or replicas.workers != self.workers:
            min_part = samples_holding(self.model, MIN_PART_VALUES)
            replicas = self._replicas[training] = Replicas(
                self.model.layers, ops, self.workers, min_part
            )
        return replicas if len(replicas.parts(n)) > 1 else None

    def parallel_parts(self, n: int, training: bool = True) -> list[slice]:
        """How a batch of ``n`` samples is split over the worker threads (one slice: it runs
        whole, in the calling thread)."""
        replicas = self._replicas_for(n, training)
        return [slice(0, n)] if replicas is None else replicas.parts(n)

    def ops_of_part(self, index: int, training: bool = True) -> list[Layer]:
        """The ops of the copy that runs part ``index`` of a split training (or inference)
        batch (for profiling; the copies exist once such a batch has run)."""
        if training not in self._replicas:
            raise RuntimeError("no batch has been split yet")
        return self._replicas[training].ops_of(index)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        """Logits (N, classes) of a batch (N, H, W, C), as ``Sequential.forward``."""
        x = self.model.check_input(x)
        ops = self._plan(training)
        if not training:
            replay = self._replays.get(ops, x)
            if replay is not None and replay.lock.acquire(blocking=False):
                try:
                    return replay(x)
                finally:
                    replay.lock.release()
        if not training and self._processes is not None and len(x) > 1:
            logits = self._processes.forward(x)
            if logits is None:
                logits = self._processes.on_threads(len(x), False, self._forward, x, ops, False)
            return logits
        return self._forward(x, ops, training)

    def _forward(self, x: np.ndarray, ops: list[Layer], training: bool) -> np.ndarray:
        """``forward`` of a checked batch on the worker threads (or whole, here)."""
        replicas = self._replicas_for(len(x), training) if len(x) > 1 else None
        if training:
            self._discard_pending()  # this forward's backward is the one that counts
        if replicas is not None:
            return replicas.forward(x, training)
        return forward_through(ops, x, training)

    __call__ = forward

    def start_processes(self, batch_size: int = 1000) -> bool:
        """Start the child processes now, for batches of up to ``batch_size``, and wait until
        they are ready, instead of once batches have run a while. Returns whether they run
        (False: processes are off, unsupported here or failed, or such batches would not
        split; the threads serve)."""
        if self._processes is None:
            return False
        self._plan(False)
        parts = [self._processes.parts(batch_size, training) for training in (False, True)]
        sizes = [p.stop - p.start for each in parts if len(each) > 1 for p in each]
        return bool(sizes) and self._processes.start(max(sizes), wait=True)

    def process_parts(self, n: int, training: bool = False) -> list[slice]:
        """How a batch of ``n`` is split over this process and the children (one slice: it
        stays on the threads)."""
        if self._processes is None:
            return [slice(0, n)]
        return self._processes.parts(n, training)

    def process_ops(self, training: bool = True) -> list[Layer]:
        """The ops that run this process's part (part 0) of a batch split over the child
        processes (for profiling; they exist once the children have started)."""
        split = None if self._processes is None else self._processes.split
        if split is None:
            raise RuntimeError("no child process has started")
        return split.train_copy[1] if training else split.infer_ops

    def close(self) -> None:
        """Stop the child processes (they also stop when this object is collected)."""
        if self._processes is not None:
            self._processes.close()

    def _discard_pending(self) -> None:
        """Forget a split training forward still waiting for its backward."""
        if True in self._replicas:
            self._replicas[True].discard()

    def backward(self, grad_logits: np.ndarray) -> None:
        """Back-propagate dL/dlogits, filling the model's layers' ``grads``."""
        training_copies = self._replicas.get(True)
        if training_copies is not None and training_copies.pending:
            training_copies.backward(grad_logits)
        else:
            backward_through(self.ops, grad_logits)

    def train_step(
        self, x: np.ndarray, labels: np.ndarray, loss: SoftmaxCrossEntropy
    ) -> tuple[float, np.ndarray]:
        """Forward, loss and backward, as ``Sequential.train_step``; a split batch goes to the
        threads (or the child processes) once, and each part computes its share of the loss."""
        x = self.model.check_input(x)
        labels = np.asarray(labels)
        if labels.shape != (len(x),):  # a part's loss sees only its slice of the labels
            raise ShapeError(f"expected {len(x)} labels, got shape {labels.shape}")
        self._discard_pending()
        self._plan(True)  # new parameter arrays: new plans, and the children restart
        if self._processes is None:
            return self._train_step(x, labels, loss)
        result = self._processes.train_step(x, labels, loss)
        if result is None:
            result = self._processes.on_threads(len(x), True, self._train_step, x, labels, loss)
        return result

    def _train_step(
        self, x: np.ndarray, labels: np.ndarray, loss: SoftmaxCrossEntropy
    ) -> tuple[float, np.ndarray]:
        """``train_step`` of a checked batch on the worker threads (or whole, here)."""
        replicas = self._replicas_for(len(x))
        if replicas is not None:
            return replicas.train_step(x, labels, loss)
        logits = forward_through(self.ops, x, True)
        value = loss.forward(logits, labels)
        backward_through(self.ops, loss.backward())
        return value, logits

    def predict_proba(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Class probabilities (N, classes), as ``Sequential.predict_proba``."""
        chunks = [
            softmax(self.forward(x[i : i + batch_size], training=False))
            for i in range(0, len(x), batch_size)
        ]
        if not chunks:
            return self.model.predict_proba(x)
        return np.concatenate(chunks)

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Predicted class index (N,)."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def __repr__(self) -> str:
        return f"compile({type(self.model).__name__}, workers={self.workers}):\n{self.describe()}"


def compile(
    model: Sequential, workers: int | None = None, processes: bool | None = None
) -> CompiledModel:
    """The fast twin of ``model``: same parameters, same results (see the module docstring).
    ``workers``: threads that share a batch (default: as many as BLAS uses); ``processes``:
    whether large batches may use child processes instead (default: yes, on POSIX, unless
    SCRATCHCNN_PROCESSES=0)."""
    return CompiledModel(model, workers, processes)
