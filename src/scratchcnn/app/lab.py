"""What the web page's learning lab runs: a training session in a background thread whose
progress streams to the page, and summaries of the data and of a model's mistakes.

One session at a time: ``start`` while one runs raises ``BusyError`` (the server answers 409).
``stop`` ends it at the next batch, with a checkpoint; ``resume`` continues from that
checkpoint exactly. Progress is a list of events (``events_since``): the loss and accuracy
every half second, a validation accuracy on a few hundred held-out digits every second or so,
the first layer's filters and the current predictions on a grid of validation digits.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..data import load, train_val_split
from ..errors import ScratchCNNError
from ..training import RECIPES, TrainingInterruptedError, get_recipe
from .classifier import Classifier

# What the page offers. "tiny" is the classic seed net: it learns in seconds.
LAB_RECIPES = {
    "tiny": get_recipe("seed").with_overrides(epochs=3, lr=0.05, batch_size=64),
    "quick": RECIPES["quick"].with_overrides(epochs=2),
    "fast": RECIPES["fast"].with_overrides(epochs=2),
}
GRID = 24  # validation digits shown with their current predictions
PROBE = 500  # validation digits behind the frequent accuracy estimate
VALIDATION = 1000  # held out of the training set, for the validation accuracy of each epoch
MAX_IMAGES = 60_000 - VALIDATION


class BusyError(ScratchCNNError):
    """A training session is already running."""


class Session:
    """One training run of the lab. ``state``: running, stopped (resumable), done, failed."""

    def __init__(self, dataset: str, data_dir: str | None, recipe: str, images: int, lr: float):
        if recipe not in LAB_RECIPES:
            known = ", ".join(LAB_RECIPES)
            raise ScratchCNNError(f"unknown recipe {recipe!r}; choose one of: {known}")
        if not 100 <= images <= MAX_IMAGES:
            raise ScratchCNNError(
                f"training images must be from 100 to {MAX_IMAGES:,}, got {images:,}"
            )
        if not 0 < lr <= 1:
            raise ScratchCNNError(f"learning rate must be in (0, 1], got {lr}")
        self.dataset, self.data_dir = dataset, data_dir
        self.recipe = LAB_RECIPES[recipe].with_overrides(lr=lr)
        self.name, self.images = recipe, images
        all_x, all_y = load(dataset, "train", data_dir)
        (self.train_x, self.train_y), (self.val_x, self.val_y) = train_val_split(
            all_x[: images + VALIDATION], all_y[: images + VALIDATION], VALIDATION, seed=0
        )
        self.clf = Classifier.create(self.recipe.arch, dataset=dataset, seed=0)
        self.checkpoint = Path(tempfile.mkdtemp(prefix="scratchcnn-lab-")) / "lab.ckpt.npz"
        self.events: list[dict] = []
        self.changed = threading.Condition()
        self.state = "starting"
        self.trainer = None
        self.thread: threading.Thread | None = None

    # -- running -----------------------------------------------------------------------------
    def run(self, resume: bool = False) -> None:
        self.state = "running"
        self.thread = threading.Thread(target=self._train, args=(resume,), daemon=True)
        self.thread.start()

    def _train(self, resume: bool) -> None:
        _lower_priority()
        last = {"progress": time.perf_counter(), "probe": 0.0}
        seen = [0, 0.0, 0]  # images, loss sum, right: since the last progress event

        def on_trainer(trainer) -> None:
            self.trainer = trainer

        def on_batch(trainer, loss, correct, n) -> None:
            seen[0] += n
            seen[1] += loss * n
            seen[2] += correct
            now = time.perf_counter()
            if now - last["progress"] >= 0.5:
                self._emit(
                    "progress",
                    epoch=trainer.epoch + (trainer.batch / trainer.steps_per_epoch),
                    loss=seen[1] / seen[0],
                    accuracy=seen[2] / seen[0],
                    images_per_second=seen[0] / (now - last["progress"]),
                )
                seen[:] = [0, 0.0, 0]
                last["progress"] = now
            if now - last["probe"] >= 1.0:
                epoch = trainer.epoch + trainer.batch / trainer.steps_per_epoch
                self._emit("probe", epoch=epoch, **self._snapshot(trainer))
                last["probe"] = time.perf_counter()

        def on_epoch(trainer, record) -> None:
            self._emit(
                "epoch",
                epoch=record.epoch,
                val_accuracy=record.val_accuracy,
                val_loss=record.val_loss,
                seconds=record.seconds,
            )

        try:
            self.clf.fit(
                self.train_x, self.train_y, recipe=self.recipe, val=(self.val_x, self.val_y),
                checkpoint=self.checkpoint, resume=resume, on_batch=on_batch,
                on_epoch=on_epoch, on_trainer=on_trainer,
                data={"lab": self.name, "images": self.images},
            )  # fmt: skip
            self.state = "done"
            self._emit("done", **self._snapshot(self.trainer), seconds=self.clf.training["seconds"])
        except TrainingInterruptedError:
            self.state = "stopped"
            self._emit("stopped")
        except Exception as err:  # a diverged run, a full disk: the page says what happened
            self.state = "failed"
            self._emit("failed", error=str(err))

    def _snapshot(self, trainer) -> dict:
        """Validation accuracy on the probe digits, the grid's predictions, the filters."""
        probs = trainer.runner.predict_proba(self.clf.prepare(self.val_x[:PROBE]))
        predicted = probs.argmax(axis=1)
        conv, weight = self.clf.model.first_filters()
        return {
            "val_accuracy": float((predicted == self.val_y[:PROBE]).mean()),
            "grid": [int(p) for p in predicted[:GRID]],
            "filters": weight.round(4).tolist(),
        }

    def _emit(self, kind: str, **fields) -> None:
        with self.changed:
            event = {"seq": len(self.events), "kind": kind, "state": self.state, **fields}
            self.events.append(event)
            self.changed.notify_all()

    def events_since(self, seq: int, timeout: float) -> list[dict]:
        """The events after ``seq``, waiting up to ``timeout`` seconds for one."""
        with self.changed:
            if len(self.events) <= seq:
                self.changed.wait(timeout)
            return self.events[seq:]

    def stop(self) -> None:
        if self.state != "running" or self.trainer is None:
            raise ScratchCNNError("no training is running")
        self.trainer.request_stop()

    def describe(self) -> dict:
        return {
            "state": self.state,
            "recipe": self.name,
            "images": self.images,
            "lr": self.recipe.lr,
            "epochs": self.recipe.epochs,
            "grid": [
                {"image": self.val_x[i].tolist(), "label": int(self.val_y[i])} for i in range(GRID)
            ],
            "events": len(self.events),
        }


def _lower_priority() -> None:
    """Give this thread (and the worker threads it starts) a nice value of 10, where the
    system can (Linux sets it per thread): the page's predictions, on the server's other
    threads, then get the CPU first, and the training takes what is left."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # no per-thread priorities here: train at full speed
        pass


class Lab:
    """The lab of one server: at most one session runs at a time."""

    def __init__(self, dataset: str, data_dir: str | None) -> None:
        self.dataset, self.data_dir = dataset, data_dir
        self.session: Session | None = None
        self.lock = threading.Lock()

    def start(self, recipe: str, images: int, lr: float) -> Session:
        with self.lock:
            if self.session is not None and self.session.state == "running":
                raise BusyError("a training is already running; stop it first")
            self.session = Session(self.dataset, self.data_dir, recipe, images, lr)
            self.session.run()
            return self.session

    def resume(self) -> Session:
        with self.lock:
            if self.session is None or self.session.state != "stopped":
                raise ScratchCNNError("nothing to resume: no stopped training")
            self.session.run(resume=True)
            return self.session


# -- summaries of the data and of mistakes ---------------------------------------------------------


def data_summary(dataset: str, data_dir: str | None, per_class: int = 8) -> dict:
    """Samples of each class, the class counts, the average image of each class and pixel
    statistics of the training set."""
    images, labels = load(dataset, "train", data_dir)
    classes = int(labels.max()) + 1
    samples, averages = [], []
    for k in range(classes):
        chosen = np.flatnonzero(labels == k)
        samples.append([images[i].tolist() for i in chosen[:per_class]])
        averages.append(np.rint(images[chosen].mean(axis=0)).astype(int).tolist())
    histogram, _ = np.histogram(images, bins=16, range=(0, 256))
    return {
        "counts": np.bincount(labels, minlength=classes).tolist(),
        "samples": samples,
        "averages": averages,
        "pixels": {
            "mean": float(images.mean() / 255),
            "std": float(images.std() / 255),
            "ink_share": float((images > 127).mean()),
            "histogram": histogram.tolist(),
        },
        "images": int(len(images)),
    }


def mistakes_summary(clf: Classifier, data_dir: str | None, count: int = 24) -> dict:
    """The confusion matrix on the test set and the most confident mistakes."""
    images, labels = load(clf.dataset, "test", data_dir)
    result = clf.evaluate(images, labels)
    probs = result["probabilities"]
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:count]
    return {
        "accuracy": result["accuracy"],
        "confusion": result["confusion"].tolist(),
        "mistakes": [
            {
                "index": int(i),
                "image": images[i].tolist(),
                "label": int(labels[i]),
                "predicted": int(predicted[i]),
                "confidence": float(probs[i, predicted[i]]),
            }
            for i in wrong
        ],
    }
