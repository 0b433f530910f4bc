"""``Classifier``: a network plus everything needed to use it, with a Keras-like API.

    clf = Classifier.create("fast", dataset="mnist", seed=0)      # a named net, or
    clf = Classifier(Sequential([...]))                           # any net of the library's layers
    clf.fit(train_images, train_labels, epochs=3, val=(val_images, val_labels))
    clf.evaluate(test_images, test_labels)["accuracy"]
    clf.predict(images)                      # uint8 (N, 28, 28) -> class indices (N,)
    clf.save("model.npz");  Classifier.load("model.npz")

Training and prediction run through the fast twin of the net (``scratchcnn.fast.compile``)
unless ``fast=False``; both give the same numbers. The command line and the web server are thin
shells over this class.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import numpy as np

from .. import __version__
from ..data.datasets import get_dataset
from ..data.loading import to_batch
from ..errors import ModelFileError, ShapeError
from ..fast import CompiledModel, compile
from ..nn import Sequential, softmax
from ..training import (
    EpochRecord,
    Recipe,
    Schedule,
    Trainer,
    TrainingInterruptedError,
    build,
)
from ..training.augment import POLICIES
from . import machine
from .modelfile import load_arrays, model_config, prefixed, read_checkpoint, save_arrays

CUSTOM = "custom"  # the architecture name of a net that is not one of the named ones


class Classifier:
    """A :class:`Sequential` network with its architecture name, dataset, class names,
    normalisation constants, metrics and training history.

    ``Classifier(model)`` takes any Sequential of the library's layers whose input is the
    dataset's images (28, 28, 1) and whose output has one logit per class."""

    def __init__(
        self,
        model: Sequential,
        architecture: str | None = None,
        dataset: str = "mnist",
        fast: bool = True,
    ) -> None:
        info = get_dataset(dataset)
        if not isinstance(model, Sequential):
            raise TypeError(f"Classifier takes a Sequential, not {type(model).__name__}")
        if model.input_shape != (28, 28, 1):
            raise ShapeError(
                f"{dataset} images are (28, 28, 1); the model takes {model.input_shape}"
            )
        if model.output_shapes[-1] != (len(info.classes),):
            raise ShapeError(
                f"{dataset} has {len(info.classes)} classes; the model's output has shape "
                f"{model.output_shapes[-1]}"
            )
        self.model = model
        self.architecture = architecture or CUSTOM
        self.dataset = dataset
        self.classes = list(info.classes)
        self.mean, self.std = info.mean, info.std
        self.fast = fast
        self.tta = False  # test-time augmentation: see predict_proba
        self.temperature = 1.0  # probabilities are softmax(logits / temperature): calibrate()
        self.threshold = 0.5  # a prediction less confident than this is "unsure"
        self.metrics: dict[str, float] = {}
        self.training: dict = {}
        self.history: list[dict] = []
        self._compiled: CompiledModel | None = None

    @classmethod
    def create(
        cls, architecture: str = "seed", dataset: str = "mnist", seed: int = 0
    ) -> Classifier:
        """A freshly initialised network of a named architecture."""
        num_classes = len(get_dataset(dataset).classes)
        return cls(build(architecture, seed=seed, num_classes=num_classes), architecture, dataset)

    @property
    def runner(self) -> Sequential | CompiledModel:
        """What runs the net: its compiled twin, or the plain model when ``fast`` is off."""
        if not self.fast:
            return self.model
        if self._compiled is None or self._compiled.model is not self.model:
            self._compiled = compile(self.model)
        return self._compiled

    # -- using it --------------------------------------------------------------------------------
    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28), or floats in [0, 1], -> the normalised batch (N, 28, 28, 1)."""
        return to_batch(images, self.mean, self.std)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes). With ``tta`` on, the mean over each image and its
        four shifts by one pixel (up, down, left, right). A model whose outputs overflow
        (weights far too large: a diverged or tampered file) raises ModelFileError instead of
        giving NaN."""
        x = self.prepare(images)
        with np.errstate(over="ignore", invalid="ignore"):
            probs = self._probabilities(x)
            if self.tta:
                blank = -self.mean / self.std  # a blank pixel, normalised
                for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    probs += self._probabilities(shifted(x, dy, dx, blank))
                probs /= 5
        if not np.isfinite(probs).all():
            raise ModelFileError(
                "the model's outputs overflow to NaN or infinity: its weights are far too large"
            )
        return probs

    def _probabilities(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """softmax(logits / temperature) of a normalised batch, in chunks."""
        if len(x) == 0:
            return self.runner.predict_proba(x)
        if len(x) <= batch_size:  # one chunk: no list to join (a photo's digit, a drawing)
            logits = self.runner.forward(x, training=False)
        else:
            chunks = range(0, len(x), batch_size)
            logits = np.concatenate(
                [self.runner.forward(x[i : i + batch_size], training=False) for i in chunks]
            )
        if self.temperature != 1.0:  # dividing by 1 changes nothing
            logits = logits / np.float32(self.temperature)
        return softmax(logits)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted class index (N,)."""
        return self.predict_proba(images).argmax(axis=1)

    def calibrate(self, images: np.ndarray, labels: np.ndarray, precision: float = 0.995) -> dict:
        """Temperature scaling (Guo et al. 2017) on held-out images: the temperature T that
        minimises their cross-entropy, so that a confidence p is right about a fraction p of
        the time; then the ``threshold``: the lowest confidence at which the predictions at or
        above it are right at least ``precision`` of the time. Below it, a prediction is
        "unsure". Returns both, and both are saved with the model."""
        labels = np.asarray(labels).astype(np.intp)
        saved_t, self.temperature = self.temperature, 1.0
        logits = np.log(np.maximum(self.predict_proba(images), 1e-30))  # same up to a shift
        self.temperature = saved_t

        def nll(t: float) -> float:
            p = softmax(logits / t)
            return float(-np.log(np.maximum(p[np.arange(len(labels)), labels], 1e-30)).mean())

        grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))
        self.temperature = float(min(grid, key=nll))
        probs = softmax(logits / self.temperature)
        confidence = probs.max(axis=1)
        right = probs.argmax(axis=1) == labels
        order = np.argsort(-confidence)
        precision_at = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
        ok = np.flatnonzero(precision_at >= precision)
        self.threshold = float(confidence[order][ok[-1]]) if len(ok) else 1.0
        return {"temperature": self.temperature, "threshold": self.threshold}

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> dict:
        """Loss, accuracy, per-class precision and recall, and the confusion matrix
        (rows: true class, columns: predicted class)."""
        probs = self.predict_proba(images)
        picked = probs[np.arange(len(labels)), labels.astype(np.intp)]
        loss = float(-np.log(np.maximum(picked, np.finfo(probs.dtype).tiny)).mean())
        accuracy = float((probs.argmax(axis=1) == labels).mean())
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
        fast: bool | None = None,
        **overrides,
    ) -> list[dict]:
        """Train on uint8 images (N, 28, 28) and labels (N,).

        ``recipe`` gives the settings (default: plain SGD, see ``Recipe``); keyword
        ``overrides`` (epochs=, lr=, batch_size=, optimizer=, ...) change single ones. With
        ``checkpoint``, the full training state is saved there after every epoch (and when
        the run is interrupted), and ``resume=True`` continues from it with its own settings.
        ``on_trainer`` receives the :class:`Trainer` before the first step (to stop it);
        ``data`` is stored as is in the training record (how the data was chosen). ``fast``
        (default: the classifier's own setting) runs the steps through the compiled twin.
        """
        recipe = (recipe or Recipe(arch=self.architecture)).with_overrides(**overrides)
        state = None
        if resume:
            if checkpoint is None or not Path(checkpoint).is_file():
                raise ModelFileError(f"nothing to resume: no checkpoint at {checkpoint}")
            state = self._restore(checkpoint)
            recipe, seed = state["recipe"], state["seed"]
        optimizer = recipe.make_optimizer(self.model)
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
            augment=POLICIES[recipe.augment],
            label_smoothing=recipe.label_smoothing,
            fast=self.fast if fast is None else fast,
            ema=recipe.ema,
        )
        if state is not None:
            try:
                optimizer.load_state_dict(state["optimizer"])
                trainer.load_state_dict(state["trainer"])
                if trainer.ema is not None:
                    for name, value in state["ema"].items():
                        trainer.ema.average[name][...] = value
            except (KeyError, TypeError, ValueError) as err:
                raise ModelFileError(f"{checkpoint}: corrupt training progress ({err})") from None
        self.tta = recipe.tta
        self.training = {
            "recipe": recipe.to_dict(),
            "seed": seed,
            "train_samples": int(len(images)),
            "val_samples": int(len(val[0])) if val is not None else 0,
            "data": dict(data or {}),
            "started": self.training.get("started") if resume else _now(),
            "machine": machine.describe(),
            "engine": "fast" if trainer.runner is not self.model else "plain",
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
        if val is not None and len(val[0]):
            self.calibrate(*val)  # after the clock: it is not training
        return self.history

    # -- files -----------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {
            "scratchcnn_version": __version__,
            "architecture": self.architecture,
            "model": self.model.config(),
            "input_shape": list(self.model.input_shape),
            "dataset": self.dataset,
            "classes": self.classes,
            "normalization": {"mean": self.mean, "std": self.std},
            "tta": self.tta,
            "calibration": {"temperature": self.temperature, "threshold": self.threshold},
            "num_parameters": self.model.num_parameters(),
            "metrics": self.metrics,
            "training": self.training,
            "history": self.history,
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        return {f"param/{k}": v for k, v in self.model.state_dict().items()}

    def save(self, path: str | Path) -> None:
        """Write the model file atomically (see :mod:`scratchcnn.app.modelfile`). A model with
        a NaN or infinite weight or statistic is refused: it would replace a file with one
        that cannot be loaded."""
        self._check_finite(path)
        save_arrays(path, self._meta(), self._arrays())

    def _check_finite(self, path: str | Path) -> None:
        for name, value in self.model.state_dict().items():
            if not np.isfinite(value).all():
                raise ModelFileError(
                    f"not saving {path}: {name} contains NaN or infinite values (training "
                    "diverged; try a lower learning rate)"
                )

    def copy(self) -> Classifier:
        """An independent copy: what saving and loading the model would give, without a file."""
        arrays = {key: value.copy() for key, value in self._arrays().items()}
        twin = Classifier.from_file_contents("a copy", copy.deepcopy(self._meta()), arrays)
        twin.fast = self.fast
        return twin

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """Read a model file written by :meth:`save` (or a checkpoint); no pickle involved."""
        meta, arrays = load_arrays(path)
        return cls.from_file_contents(path, meta, arrays)

    @classmethod
    def from_file_contents(
        cls, path: str | Path, meta: dict, arrays: dict[str, np.ndarray]
    ) -> Classifier:
        """The classifier that a model file's checked ``meta`` and ``arrays`` describe (see
        :func:`scratchcnn.app.modelfile.load_arrays`)."""
        try:
            model = Sequential.from_config(model_config(meta))
            clf = cls(model, meta["architecture"], meta["dataset"])
            clf.model.load_state_dict(prefixed(arrays, "param/"))
        except (ValueError, TypeError) as err:
            raise ModelFileError(f"{path}: {err}") from None
        norm = meta.get("normalization") or {}
        clf.mean = float(norm.get("mean", clf.mean))
        clf.std = float(norm.get("std", clf.std))
        clf.metrics = dict(meta.get("metrics") or {})
        clf.training = dict(meta.get("training") or {})
        clf.history = list(meta.get("history") or [])
        clf.tta = meta.get("tta", False)
        calibration = meta.get("calibration", {})
        clf.temperature = calibration.get("temperature", 1.0)
        clf.threshold = calibration.get("threshold", 0.5)
        return clf

    def _save_checkpoint(self, path: str | Path, trainer: Trainer, optimizer) -> None:
        self._check_finite(path)
        meta = self._meta()
        meta["checkpoint"] = {
            "trainer": trainer.state_dict(),
            "recipe": self.training["recipe"],
            "seed": self.training["seed"],
            "seconds": self.training.get("seconds", 0.0),
        }
        arrays = self._arrays()
        arrays.update({f"optim/{k}": np.asarray(v) for k, v in optimizer.state_dict().items()})
        if trainer.ema is not None:
            arrays.update({f"ema/{k}": v for k, v in trainer.ema.average.items()})
        save_arrays(path, meta, arrays)

    def _restore(self, path: str | Path) -> dict:
        """Load a checkpoint's weights into this classifier's net; return its progress."""
        ckpt = read_checkpoint(path)
        saved = ckpt.meta.get("model")
        if (saved is not None and saved != self.model.config()) or ckpt.meta.get(
            "dataset"
        ) != self.dataset:
            raise ModelFileError(
                f"{path}: checkpoint is for {ckpt.meta.get('architecture')} on "
                f"{ckpt.meta.get('dataset')}, not {self.architecture} on {self.dataset}"
            )
        try:
            self.model.load_state_dict(prefixed(ckpt.arrays, "param/"))
            recipe = Recipe.from_dict(ckpt.recipe)
        except ValueError as err:
            raise ModelFileError(f"{path}: {err}") from None
        self.training = dict(ckpt.meta.get("training") or {})
        self.history = list(ckpt.meta.get("history") or [])
        return {
            "recipe": recipe,
            "seed": ckpt.seed,
            "trainer": ckpt.trainer,
            "optimizer": ckpt.optimizer,
            "ema": prefixed(ckpt.arrays, "ema/"),
            "seconds": ckpt.seconds,
        }

    def info(self) -> dict:
        """What the model file says about itself."""
        return self._meta()

    def export_onnx(self, path: str | Path) -> Path:
        """Write an ONNX file that takes uint8 images (N, 28, 28) and gives what
        :meth:`predict_proba` gives (see :mod:`scratchcnn.app.export`)."""
        from .export import export_onnx

        return export_onnx(self, path)


def default_model() -> Path:
    """The model file that ships inside the package (``scratchcnn/app/models/digits.npz``):
    what ``predict``, ``read`` and ``serve`` use when given no model."""
    path = Path(str(resources.files("scratchcnn.app.models").joinpath("digits.npz")))
    if not path.is_file():
        raise ModelFileError(
            f"no bundled model at {path}: pass a model file (train one with scratchcnn train)"
        )
    return path


def shifted(x: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """A batch (N, H, W, C) moved by (dy, dx) pixels: output pixel (i, j) is input pixel
    (i - dy, j - dx); what moves in is ``fill``."""
    out = np.full_like(x, fill)
    h, w = x.shape[1:3]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
