"""Teach a trained model your own handwriting: ``scratchcnn tune FOLDER``.

The folder holds one subfolder per class, named by the class (``my-digits/7/kitchen.jpg``; for
a dataset whose class names cannot be folder names, its index: ``my-clothes/0/``). Each image
goes through the pipeline ``predict`` uses (``photos.find_digit``), so the model learns from
exactly what it will see when it reads your photos later.

Why the steps are what they are:

* **Held out first.** Accuracy on the images a model trained on says little, least of all with
  a few dozen of them. A share of your images, from every class that has two or more, is kept
  out of training and measured before and after (``hold_out``).
* **Mixed with the model's own dataset.** A few dozen images, trained on alone, pull every
  weight toward them and the model forgets everyone else's handwriting. Each epoch is a sample
  of the dataset's training images plus your images repeated to a quarter of it; the model's
  own augmentation makes the repeats differ. The dataset's validation images (the same 5,000
  ``scratchcnn train`` holds out) are measured before and after, so a loss there shows.
* **Gently.** A one-cycle schedule whose peak rate is a tenth of what training from scratch
  uses, for a few epochs: the weights move from where they are, not to somewhere new.

The tuned model is a new file; the model it started from is left as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import train_val_split
from ..errors import ScratchCNNError
from ..training import Recipe
from .classifier import Classifier
from .photos import find_digit

VAL_SIZE = 5000  # the dataset's validation images: as ``scratchcnn train`` holds them out
SHOWN_ERRORS = 5  # bad images named in the error, at most


@dataclass
class LabelledImages:
    """Images as the network reads them, uint8 (N, 28, 28), their class indices (N,) and the
    files they came from."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> LabelledImages:
        return LabelledImages(
            self.images[index], self.labels[index], [self.paths[i] for i in index]
        )


def class_folders(folder: str | Path, classes: list[str]) -> dict[Path, int]:
    """The subfolders of ``folder`` and the class index each names (its class name, or the
    index itself). Hidden entries are skipped; anything else is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ScratchCNNError(
            f"{folder} is not a folder (give a folder with one subfolder per class)"
        )
    by_name = {name: i for i, name in enumerate(classes)} | {str(i): i for i in range(len(classes))}
    found: dict[Path, int] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise ScratchCNNError(
                f"{entry}: put each image in the subfolder of its class, "
                f"e.g. {folder / classes[0]}/"
            )
        if entry.name not in by_name:
            names = ", ".join(classes) if len(classes) <= 12 else f"0 to {len(classes) - 1}"
            raise ScratchCNNError(f"{entry}: not a class of this model ({names})")
        found[entry] = by_name[entry.name]
    if not found:
        raise ScratchCNNError(f"{folder} has no class subfolders (e.g. {folder / classes[0]}/)")
    return found


def read_folder(folder: str | Path, classes: list[str]) -> LabelledImages:
    """Every image in the class subfolders of ``folder``, each read as ``predict`` reads one.
    Any file that is not a readable image of a digit is an error naming it: nothing is left
    out silently."""
    images, labels, paths, errors = [], [], [], []
    for sub, label in class_folders(folder, classes).items():
        for path in sorted(p for p in sub.iterdir() if not p.name.startswith(".")):
            if path.is_dir():
                errors.append(f"{path}: a folder inside a class folder")
                continue
            try:
                images.append(find_digit(path).image)
            except ScratchCNNError as err:
                errors.append(str(err))
                continue
            labels.append(label)
            paths.append(path)
    if errors:
        shown = "; ".join(errors[:SHOWN_ERRORS])
        more = f" (and {len(errors) - SHOWN_ERRORS} more)" if len(errors) > SHOWN_ERRORS else ""
        raise ScratchCNNError(f"{len(errors)} file(s) could not be read: {shown}{more}")
    if not images:
        raise ScratchCNNError(f"no images in the class subfolders of {folder}")
    return LabelledImages(np.stack(images), np.array(labels, dtype=np.int64), paths)


def hold_out(labels: np.ndarray, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held) with ``share`` of each class held out, rounded, at least one from
    every class that has two or more images and never a class's last one."""
    if not 0 <= share < 1:
        raise ScratchCNNError(f"the share held out must be in [0, 1), got {share}")
    rng = np.random.default_rng(seed)
    train, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        k = (
            0
            if share == 0 or len(members) < 2
            else min(len(members) - 1, max(1, round(share * len(members))))
        )
        held.extend(members[:k])
        train.extend(members[k:])
    return np.sort(np.array(train, dtype=np.intp)), np.sort(np.array(held, dtype=np.intp))


def accuracy(clf: Classifier, data: LabelledImages | tuple[np.ndarray, np.ndarray]) -> float | None:
    images, labels = (data.images, data.labels) if isinstance(data, LabelledImages) else data
    return None if len(labels) == 0 else float((clf.predict(images) == labels).mean())


def fine_tune(
    clf: Classifier,
    mine: LabelledImages,
    dataset: tuple[np.ndarray, np.ndarray],
    epochs: int = 3,
    lr: float | None = None,
    held_share: float = 0.25,
    base_samples: int = 6000,
    seed: int = 0,
    on_batch: Callable | None = None,
    on_epoch: Callable | None = None,
) -> dict:
    """Train ``clf`` in place on ``mine`` mixed with ``dataset`` (the model's own training
    images and labels, e.g. all 60,000 of MNIST's), as the module's docstring says. Returns
    what was measured: accuracy on the held-out share of ``mine`` and on the dataset's
    validation images, before and after, and on the images of ``mine`` trained on."""
    try:  # the settings the model was trained with, if its file has them
        base = Recipe.from_dict(clf.training["recipe"])
    except (KeyError, TypeError, ValueError):
        base = Recipe(arch=clf.architecture)
    recipe = base.with_overrides(
        epochs=epochs,
        lr=lr if lr is not None else base.lr / 10,
        schedule="onecycle",
        warmup=0.2,
        ema=0.0,  # an average over so few steps would mostly be the starting weights
    )
    train_idx, held_idx = hold_out(mine.labels, held_share, seed)
    own, held = mine.subset(train_idx), mine.subset(held_idx)
    (dx, dy), val = train_val_split(*dataset, min(VAL_SIZE, len(dataset[0]) // 10), seed=0)
    pick = np.random.default_rng(seed).permutation(len(dx))[: min(base_samples, len(dx))]
    repeats = max(1, math.ceil(len(pick) / 3 / len(own)))  # a quarter of each epoch is yours
    train_x = np.concatenate([dx[pick], np.repeat(own.images, repeats, axis=0)])
    train_y = np.concatenate([dy[pick], np.repeat(own.labels, repeats)])

    before = {
        "held_out": accuracy(clf, held),
        "trained_on": accuracy(clf, own),
        "validation": accuracy(clf, val),
    }
    origin = {
        "architecture": clf.architecture,
        "test_accuracy": clf.metrics.get("test_accuracy"),
        "trained": {k: clf.training.get(k) for k in ("recipe", "seed", "finished")},
    }
    clf.fit(
        train_x,
        train_y,
        recipe=recipe,
        seed=seed,
        on_batch=on_batch,
        on_epoch=on_epoch,
        data={"fine_tuned_from": origin},  # what it was trained on: the report below
    )
    clf.calibrate(*val)  # its confidence, as training calibrates it
    clf.metrics.pop("test_accuracy", None)  # of the model before: measure the tuned one anew
    clf.metrics.pop("test_loss", None)
    after = {
        "held_out": accuracy(clf, held),
        "trained_on": accuracy(clf, own),
        "validation": accuracy(clf, val),
    }
    clf.metrics["val_accuracy"] = after["validation"]
    report = {
        "own_images": len(mine),
        "trained_on": len(own),
        "held_out": len(held),
        "repeats": repeats,
        "dataset_samples": len(pick),
        "validation_images": len(val[1]),
        "epochs": recipe.epochs,
        "lr": recipe.lr,
        "augment": recipe.augment,
        "before": before,
        "after": after,
        "seconds": clf.training["seconds"],
    }
    clf.training["fine_tune"] = report
    return report
