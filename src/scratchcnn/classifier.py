"""``Classifier``: a network plus everything needed to use it, with a Keras-like API.

    clf = Classifier.create("keras", dataset="mnist", seed=0)
    clf.fit(train_images, train_labels, epochs=3, val=(val_images, val_labels))
    clf.evaluate(test_images, test_labels)["accuracy"]
    clf.predict(images)                      # uint8 (N, 28, 28) -> class indices (N,)
    clf.save("model.npz");  Classifier.load("model.npz")

The command line is a thin shell over this class.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import __version__, machine
from .architectures import ARCHITECTURES, INPUT_SHAPE, build
from .augment import random_affine
from .data.datasets import get_dataset
from .data.loading import normalize
from .errors import ModelFileError
from .model import Sequential
from .modelfile import load_arrays, save_arrays
from .optim import OPTIMIZERS, SGD, Optimizer
from .recipes import Recipe
from .schedules import Schedule
from .train import EpochRecord, Trainer, TrainingInterruptedError, evaluate


class Classifier:
    """A :class:`Sequential` network with its architecture name, dataset, class names,
    normalisation constants, metrics and training history."""

    def __init__(self, model: Sequential, architecture: str, dataset: str = "mnist") -> None:
        info = get_dataset(dataset)
        self.model = model
        self.architecture = architecture
        self.dataset = dataset
        self.classes = list(info.classes)
        self.mean, self.std = info.mean, info.std
        self.metrics: dict[str, float] = {}
        self.training: dict = {}
        self.history: list[dict] = []

    @classmethod
    def create(
        cls, architecture: str = "seed", dataset: str = "mnist", seed: int = 0
    ) -> Classifier:
        """A freshly initialised network of a named architecture."""
        num_classes = len(get_dataset(dataset).classes)
        return cls(build(architecture, seed=seed, num_classes=num_classes), architecture, dataset)

    # -- using it --------------------------------------------------------------------------------
    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28), or floats in [0, 1], -> normalised float32 (N, 28, 28, 1)."""
        images = np.asarray(images)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.dtype != np.uint8:
            images = np.clip(np.rint(images.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        return normalize(images, self.mean, self.std)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes)."""
        return self.model.predict_proba(self.prepare(images))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted class index (N,)."""
        return self.predict_proba(images).argmax(axis=1)

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> dict:
        """Loss, accuracy, per-class precision and recall, and the confusion matrix
        (rows: true class, columns: predicted class)."""
        loss, accuracy, probs = evaluate(self.model, images, labels, self.mean, self.std)
        k = len(self.classes)
        predicted = probs.argmax(axis=1)
        confusion = np.zeros((k, k), dtype=np.int64)
        np.add.at(confusion, (labels.astype(np.intp), predicted), 1)
        hits = np.diag(confusion).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = hits / confusion.sum(axis=0)
            recall = hits / confusion.sum(axis=1)
        return {
            "loss": loss,
            "accuracy": accuracy,
            "precision": precision,
            "recall": recall,
            "confusion": confusion,
            "probabilities": probs,
        }

    def summary(self) -> str:
        return self.model.summary()

    # -- training --------------------------------------------------------------------------------
    def fit(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        recipe: Recipe | None = None,
        val: tuple[np.ndarray, np.ndarray] | None = None,
        seed: int = 0,
        checkpoint: str | Path | None = None,
        resume: bool = False,
        on_batch: Callable | None = None,
        on_epoch: Callable[[Trainer, EpochRecord], None] | None = None,
        on_trainer: Callable[[Trainer], None] | None = None,
        data: dict | None = None,
        **overrides,
    ) -> list[dict]:
        """Train on uint8 images (N, 28, 28) and labels (N,).

        ``recipe`` gives the settings (default: the architecture's plain recipe); keyword
        ``overrides`` (epochs=, lr=, batch_size=, optimizer=, ...) change single ones. With
        ``checkpoint``, the full training state is saved there after every epoch (and when
        the run is interrupted), and ``resume=True`` continues from it with its own settings.
        ``on_trainer`` receives the :class:`Trainer` before the first step (to stop it);
        ``data`` is stored as is in the training record (how the data was chosen).
        """
        recipe = (recipe or Recipe(arch=self.architecture)).with_overrides(**overrides)
        state = None
        if resume:
            if checkpoint is None or not Path(checkpoint).is_file():
                raise ModelFileError(f"nothing to resume: no checkpoint at {checkpoint}")
            state = self._load_checkpoint(checkpoint)
            recipe = Recipe(**state["recipe"])
            seed = state["seed"]
        optimizer = make_optimizer(recipe, self.model)
        steps_per_epoch = math.ceil(len(images) / recipe.batch_size)
        schedule = Schedule(
            recipe.schedule,
            recipe.lr,
            total_steps=steps_per_epoch * recipe.epochs,
            steps_per_epoch=steps_per_epoch,
            warmup=recipe.warmup,
        )
        trainer = Trainer(
            self.model,
            optimizer,
            (images, labels),
            recipe.epochs,
            recipe.batch_size,
            self.mean,
            self.std,
            seed=seed,
            val=val,
            schedule=schedule,
            augment=random_affine if recipe.augment else None,
            label_smoothing=recipe.label_smoothing,
        )
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            trainer.load_state_dict(state["trainer"])
        self.training = {
            "recipe": recipe.to_dict(),
            "seed": seed,
            "train_samples": int(len(images)),
            "val_samples": int(len(val[0])) if val is not None else 0,
            "data": dict(data or {}),
            "started": self.training.get("started") if resume else _now(),
            "machine": machine.describe(),
        }
        started = time.perf_counter()
        previous = state["seconds"] if state is not None else 0.0  # time spent before resuming

        def save_progress(t: Trainer) -> None:
            self.training["seconds"] = previous + time.perf_counter() - started
            if checkpoint is not None:
                self._save_checkpoint(checkpoint, t, optimizer)

        def epoch_done(t: Trainer, record: EpochRecord) -> None:
            self.history = [asdict(r) for r in t.history]
            save_progress(t)
            if on_epoch:
                on_epoch(t, record)

        if on_trainer:
            on_trainer(trainer)
        try:
            trainer.run(on_batch=on_batch, on_epoch=epoch_done)
        except TrainingInterruptedError:
            save_progress(trainer)  # a clean stop at a batch boundary: keep everything
            raise
        self.history = [asdict(r) for r in trainer.history]
        self.training["seconds"] = previous + time.perf_counter() - started
        self.training["finished"] = _now()
        if self.history and self.history[-1]["val_accuracy"] is not None:
            self.metrics["val_accuracy"] = self.history[-1]["val_accuracy"]
        return self.history

    # -- files -----------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {
            "scratchcnn_version": __version__,
            "architecture": self.architecture,
            "input_shape": list(INPUT_SHAPE),
            "dataset": self.dataset,
            "classes": self.classes,
            "normalization": {"mean": self.mean, "std": self.std},
            "num_parameters": self.model.num_parameters(),
            "metrics": self.metrics,
            "training": self.training,
            "history": self.history,
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        return {f"param/{k}": v for k, v in self.model.state_dict().items()}

    def save(self, path: str | Path) -> None:
        """Write the model file atomically (see :mod:`scratchcnn.modelfile`)."""
        save_arrays(path, self._meta(), self._arrays())

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """Read a model file written by :meth:`save` (or a checkpoint); no pickle involved."""
        meta, arrays = load_arrays(path)
        clf = cls._from_meta(path, meta)
        params = _unprefixed(arrays, "param/")
        try:
            clf.model.load_state_dict(params)
        except ModelFileError as err:
            raise ModelFileError(f"{path}: {err}") from None
        return clf

    @classmethod
    def _from_meta(cls, path: str | Path, meta: dict) -> Classifier:
        arch, dataset = meta.get("architecture"), meta.get("dataset")
        if arch not in ARCHITECTURES:
            raise ModelFileError(f"{path}: unknown architecture {arch!r} in model file")
        try:
            clf = cls.create(arch, dataset=dataset)
        except ValueError as err:
            raise ModelFileError(f"{path}: {err}") from None
        norm = meta.get("normalization") or {}
        clf.mean = float(norm.get("mean", clf.mean))
        clf.std = float(norm.get("std", clf.std))
        clf.metrics = dict(meta.get("metrics") or {})
        clf.training = dict(meta.get("training") or {})
        clf.history = list(meta.get("history") or [])
        return clf

    def _save_checkpoint(self, path: str | Path, trainer: Trainer, optimizer: Optimizer) -> None:
        meta = self._meta()
        meta["checkpoint"] = {
            "trainer": trainer.state_dict(),
            "recipe": self.training["recipe"],
            "seed": self.training["seed"],
            "seconds": self.training.get("seconds", 0.0),
        }
        arrays = self._arrays()
        arrays.update({f"optim/{k}": np.asarray(v) for k, v in optimizer.state_dict().items()})
        save_arrays(path, meta, arrays)

    def _load_checkpoint(self, path: str | Path) -> dict:
        meta, arrays = load_arrays(path)
        if "checkpoint" not in meta:
            raise ModelFileError(f"{path}: a finished model file, not a training checkpoint")
        if meta.get("architecture") != self.architecture or meta.get("dataset") != self.dataset:
            raise ModelFileError(
                f"{path}: checkpoint is for {meta.get('architecture')} on {meta.get('dataset')}, "
                f"not {self.architecture} on {self.dataset}"
            )
        params = _unprefixed(arrays, "param/")
        self.model.load_state_dict(params)
        self.training = dict(meta.get("training") or {})
        self.history = list(meta.get("history") or [])
        state = dict(meta["checkpoint"])
        state["optimizer"] = _unprefixed(arrays, "optim/")
        return state

    def info(self) -> dict:
        """What the model file says about itself."""
        return self._meta()


def make_optimizer(recipe: Recipe, model: Sequential) -> Optimizer:
    try:
        kind = OPTIMIZERS[recipe.optimizer]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {recipe.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"
        ) from None
    if kind is SGD:
        return SGD(
            model.parameters(),
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=False,
            weight_decay=recipe.weight_decay,
        )
    return kind(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def _unprefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose names start with ``prefix``, under their names without it."""
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
