"""From verified files to training batches.

Images stay uint8 (N, 28, 28) in memory (47 MB for MNIST's 60,000); each batch is converted on
the fly to normalised float32 NHWC, x = (pixel / 255 - mean) / std, so memory stays near the
uint8 size of the dataset whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError, ShapeError
from .datasets import ensure_files, get_dataset
from .download import Progress
from .idx import read_idx


def load(
    name: str = "mnist",
    split: str = "train",
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 28, 28), labels uint8 (N,))`` of one split, found or downloaded."""
    paths = ensure_files(name, data_dir, splits=[split], progress=progress)
    images = read_idx(paths[(split, "images")])
    labels = read_idx(paths[(split, "labels")])
    where = paths[(split, "images")]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{where}: expected uint8 images (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.shape != (images.shape[0],):
        raise DataError(
            f"{paths[(split, 'labels')]}: expected {images.shape[0]} uint8 labels, "
            f"got {labels.dtype} {labels.shape}"
        )
    classes = len(get_dataset(name).classes)
    if labels.size and labels.max() >= classes:
        raise DataError(f"{paths[(split, 'labels')]}: label {labels.max()} is not a class")
    return images, labels


def train_val_split(
    images: np.ndarray, labels: np.ndarray, val_size: int, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A deterministic split: the same ``seed`` always holds out the same ``val_size`` samples."""
    if not 0 <= val_size < len(images):
        raise ValueError(f"validation size must be in [0, {len(images)}), got {val_size}")
    order = np.random.default_rng(seed).permutation(len(images))
    train, val = np.sort(order[val_size:]), np.sort(order[:val_size])
    return (images[train], labels[train]), (images[val], labels[val])


def to_batch(images: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """Grey images -> the float32 batch a model takes: (N, H, W, 1), x = (pixel - mean) / std
    with pixels in [0, 1]. The one place images become a batch.

    ``images``: uint8 (N, H, W) or (N, H, W, 1), read as pixel / 255; or floats already in
    [0, 1], of the same shapes."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ShapeError(f"expected grey images (N, H, W), got shape {images.shape}")
    if images.dtype == np.uint8:
        x = images.astype(np.float32)
        x *= np.float32(1.0 / (255.0 * std))
    elif images.dtype.kind == "f":
        x = images.astype(np.float32)  # a copy: scaled in place below
        x *= np.float32(1.0 / std)
    else:
        raise ShapeError(f"expected uint8 images or floats in [0, 1], got {images.dtype}")
    x -= np.float32(mean / std)
    return x[..., None]


def batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    mean: float,
    std: float,
    rng: np.random.Generator | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x float32 (B, 28, 28, 1), y int64 (B,))``, shuffled when ``rng`` is given."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    order = rng.permutation(len(images)) if rng is not None else np.arange(len(images))
    for start in range(0, len(images), batch_size):
        idx = order[start : start + batch_size]
        yield to_batch(images[idx], mean, std), labels[idx].astype(np.int64)
