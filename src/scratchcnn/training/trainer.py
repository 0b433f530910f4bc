"""The training loop: batches in, updated parameters out, resumable at any batch boundary.

One step:  logits = model(x);  L = loss(logits, y);  model.backward(dL/dlogits);  optimizer.step()
           (``model.train_step(x, y, loss)`` does the first three at once)

The steps run through ``scratchcnn.fast.compile(model)``, the exact fast twin of the model,
unless ``fast=False``: then every layer runs as its file in ``nn/`` reads.

Everything that decides what happens next - parameters, optimizer moments, the generators that
shuffle, augment and drop out, the position inside the epoch and the running sums - is in
``Trainer.state_dict()``, so a run stopped after any batch and resumed from that state ends
with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ..data.loading import batches
from ..errors import DivergenceError
from ..fast import CompiledModel, compile
from ..nn import Optimizer, Sequential, SoftmaxCrossEntropy
from .schedules import Schedule

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# A mean cross-entropy this high means the right class gets a probability of e^-100 on
# average: no run that is learning gets near it (an untrained net starts at ln(10) = 2.3).
DIVERGED_LOSS = 100.0


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    seconds: float
    samples_per_second: float


class WeightAverage:
    """An exponential moving average (EMA) of a model's parameters and batch-norm statistics:
    after every step, ``avg <- d * avg + (1 - d) * w``, with the decay d warming up as
    min(decay, (1 + t) / (10 + t)) over the first steps t. The average of the last few
    hundred steps generalises better than the last step's weights (Polyak averaging)."""

    def __init__(self, model: Sequential, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.model, self.decay, self.updates = model, float(decay), 0
        self.average = model.state_dict()  # copies

    def _live(self) -> dict[str, np.ndarray]:
        """The model's own arrays (not copies), by state_dict name."""
        return {
            f"{i}.{key}": value
            for i, layer in enumerate(self.model.layers)
            for store in (layer.params, layer.buffers)
            for key, value in store.items()
        }

    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, value in self._live().items():
            average = self.average[name]
            average *= d
            average += (1 - d) * value

    def swap(self) -> None:
        """Exchange the model's arrays with the average (twice restores the model)."""
        for name, value in self._live().items():
            kept = value.copy()
            value[...] = self.average[name]
            self.average[name] = kept


class TrainingInterruptedError(Exception):
    """Raised at a batch boundary after :meth:`Trainer.request_stop`."""


def evaluate(
    model: Sequential | CompiledModel,
    images: np.ndarray,
    labels: np.ndarray,
    mean: float,
    std: float,
    batch_size: int = 1000,
) -> tuple[float, float, np.ndarray]:
    """``(mean loss, accuracy, probabilities (N, classes))`` in inference mode."""
    loss_fn = SoftmaxCrossEntropy()
    total, probs = 0.0, []
    for x, y in batches(images, labels, batch_size, mean, std):
        total += loss_fn.forward(model.forward(x, training=False), y) * len(y)
        probs.append(loss_fn.probs)
    if not probs:
        return float("nan"), float("nan"), np.zeros((0, 0))
    p = np.concatenate(probs)
    return total / len(labels), float((p.argmax(1) == labels).mean()), p


class Trainer:
    """Train ``model`` on uint8 images (N, 28, 28) and labels (N,) for ``epochs`` epochs."""

    def __init__(
        self,
        model: Sequential,
        optimizer: Optimizer,
        train: tuple[np.ndarray, np.ndarray],
        epochs: int,
        batch_size: int,
        mean: float,
        std: float,
        seed: int = 0,
        val: tuple[np.ndarray, np.ndarray] | None = None,
        schedule: Schedule | None = None,
        augment: Augment | None = None,
        label_smoothing: float = 0.0,
        fast: bool = True,
        ema: float = 0.0,
    ) -> None:
        if epochs < 1 or batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        self.model, self.optimizer = model, optimizer
        # What runs the steps: the compiled twin (same parameters, same results), or the model.
        self.runner: Sequential | CompiledModel = compile(model) if fast else model
        self.images, self.labels = train
        self.val = val if val is not None and len(val[0]) else None
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.mean, self.std = mean, std
        self.schedule, self.augment = schedule, augment
        self.loss_fn = SoftmaxCrossEntropy(label_smoothing)
        self.shuffle_rng, self.augment_rng = np.random.default_rng(seed).spawn(2)
        self.steps_per_epoch = -(-len(self.images) // self.batch_size)
        self.history: list[EpochRecord] = []
        self.epoch = 0  # completed epochs
        self.batch = 0  # batches done in the current epoch
        self._epoch_rng_state = self.shuffle_rng.bit_generator.state
        self._sums = [0.0, 0, 0, 0.0]  # loss * n, correct, seen, seconds
        self._stop = False
        # With ``ema`` (a decay such as 0.999), validation and the final model use the
        # average of the weights instead of the last step's.
        self.ema = WeightAverage(model, ema) if ema else None

    def request_stop(self) -> None:
        """Ask the loop to stop at the next batch boundary (safe from a signal handler)."""
        self._stop = True

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def run(
        self,
        on_batch: Callable[[Trainer, float, int, int], None] | None = None,
        on_epoch: Callable[[Trainer, EpochRecord], None] | None = None,
    ) -> list[EpochRecord]:
        """Train to the end; ``on_batch(trainer, loss, correct, n)`` after every step and
        ``on_epoch(trainer, record)`` after every epoch (checkpoints go there)."""
        while self.epoch < self.epochs:
            record = self._run_epoch(on_batch)
            if on_epoch:
                on_epoch(self, record)
        if self.ema is not None:
            self.ema.swap()  # the model keeps the average
            self.ema = None
        return self.history

    def _run_epoch(self, on_batch) -> EpochRecord:
        # The epoch's order comes from the generator state saved at its start, so a resumed
        # epoch replays the same permutation and skips the batches already done.
        self.shuffle_rng.bit_generator.state = self._epoch_rng_state
        stream = batches(
            self.images, self.labels, self.batch_size, self.mean, self.std, self.shuffle_rng
        )
        for index, (x, y) in enumerate(stream):
            if index < self.batch:
                continue
            if self._stop:
                self._stop = False
                raise TrainingInterruptedError
            started = time.perf_counter()
            loss, correct = self.step(x, y)
            self.batch = index + 1
            sums = self._sums
            sums[0] += loss * len(y)
            sums[1] += correct
            sums[2] += len(y)
            sums[3] += time.perf_counter() - started
            if on_batch:
                on_batch(self, loss, correct, len(y))
        for name, value in self.model.state_dict().items():  # weights and running statistics
            if not np.isfinite(value).all():  # never checkpoint a broken model
                raise self._diverged(f"{name} is no longer finite")
        loss_sum, correct, seen, seconds = self._sums
        val_loss = val_acc = None
        if self.val is not None:
            if self.ema is not None:
                self.ema.swap()
            val_loss, val_acc, _ = evaluate(self.runner, *self.val, self.mean, self.std)
            if self.ema is not None:
                self.ema.swap()
        record = EpochRecord(
            epoch=self.epoch + 1,
            loss=loss_sum / max(seen, 1),
            accuracy=correct / max(seen, 1),
            val_loss=val_loss,
            val_accuracy=val_acc,
            lr=self.optimizer.lr,
            seconds=seconds,
            samples_per_second=seen / seconds if seconds else 0.0,
        )
        self.history.append(record)
        self.epoch += 1
        self.batch = 0
        self._sums = [0.0, 0, 0, 0.0]
        self._epoch_rng_state = self.shuffle_rng.bit_generator.state
        return record

    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One optimizer step on a batch; returns (loss, number correct)."""
        if self.schedule is not None:
            self.optimizer.lr = self.schedule(self.epoch * self.steps_per_epoch + self.batch)
        if self.augment is not None:
            x = self.augment(x, self.augment_rng)
        # Overflow is not worth a warning here: a non-finite loss is reported as divergence.
        with np.errstate(over="ignore", invalid="ignore"):
            loss, logits = self.runner.train_step(x, y, self.loss_fn)
            if not np.isfinite(loss) or loss > DIVERGED_LOSS or not np.isfinite(logits).all():
                raise self._diverged(f"loss {loss:.4g}")  # before the step: weights stay good
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        return loss, int((logits.argmax(axis=1) == y).sum())

    def _diverged(self, what: str) -> DivergenceError:
        return DivergenceError(
            f"training diverged at epoch {self.epoch + 1}, batch {self.batch + 1} ({what}) "
            f"with learning rate {self.optimizer.lr:g}; try a lower learning rate (--lr)"
        )

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """JSON-able progress (arrays are saved separately: model and optimizer state)."""
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "epoch_rng_state": self._epoch_rng_state,
            "augment_rng_state": self.augment_rng.bit_generator.state,
            "dropout_rng_state": self.model.rng.bit_generator.state,
            "sums": list(self._sums),
            "history": [asdict(r) for r in self.history],
            "ema_updates": self.ema.updates if self.ema is not None else 0,
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._epoch_rng_state = state["epoch_rng_state"]
        self.shuffle_rng.bit_generator.state = state["epoch_rng_state"]
        self.augment_rng.bit_generator.state = state["augment_rng_state"]
        self.model.rng.bit_generator.state = state["dropout_rng_state"]
        self._sums = list(state["sums"])
        self.history = [EpochRecord(**r) for r in state["history"]]
        if self.ema is not None:
            self.ema.updates = int(state.get("ema_updates", 0))
