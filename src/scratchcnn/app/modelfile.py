"""Model files: one ``.npz`` of arrays plus a JSON document, read without pickle.

    __meta__            uint8 bytes of a UTF-8 JSON document: format, format_version,
                        scratchcnn_version, architecture (a name, or "custom"), model (the
                        input shape and the layer list: types and constructor arguments),
                        dataset, classes, normalisation, metrics, training details, history
                        (and, in a checkpoint, the training progress)
    param/<i>.<name>    each layer's parameters and buffers
    optim/<name>/<slot> optimizer state (checkpoints only)

Format version 1 (before layer lists) named one of the built-in architectures instead of
``model``; such files still load.

Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the
target, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFileError
from ..fileio import atomic_write

FORMAT = "scratchcnn-model"
FORMAT_VERSION = 2


def save_arrays(path: str | Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``meta`` and ``arrays`` as one model file, atomically."""
    doc = dict(meta, format=FORMAT, format_version=FORMAT_VERSION)
    blob = np.frombuffer(json.dumps(doc, indent=1).encode("utf-8"), dtype=np.uint8)
    payload = {"__meta__": blob, **arrays}
    atomic_write(path, lambda out: np.savez(out, **payload))


def load_arrays(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a model file; any problem is a :class:`ModelFileError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise ModelFileError(f"{path}: not a readable scratchcnn model file ({err})") from None
    blob = arrays.pop("__meta__", None)
    if blob is None or blob.dtype != np.uint8 or blob.ndim != 1:
        raise ModelFileError(f"{path}: not a scratchcnn model file (no metadata)")
    try:
        meta = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ModelFileError(f"{path}: corrupt model metadata ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a scratchcnn model file")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this scratchcnn reads "
            f"({FORMAT_VERSION}); upgrade scratchcnn"
        )
    return meta, arrays


def prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose names start with ``prefix``, under their names without it."""
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


@dataclass
class Checkpoint:
    """A training checkpoint: the model file's ``meta`` and ``arrays``, and the progress they
    hold: the recipe (settings), seed, how the data was chosen, the trainer's and the
    optimizer's state, and the seconds trained so far."""

    path: Path
    meta: dict
    arrays: dict[str, np.ndarray]
    recipe: dict[str, Any]
    seed: int
    data: dict[str, Any]
    trainer: dict[str, Any]
    optimizer: dict[str, np.ndarray]
    seconds: float


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by ``Classifier.fit(checkpoint=...)``: the one reader of
    training progress, for the Python API and the command line alike."""
    path = Path(path)
    meta, arrays = load_arrays(path)
    progress = meta.get("checkpoint")
    if progress is None:
        raise ModelFileError(f"{path}: a finished model file, not a training checkpoint")
    training = meta.get("training")
    if not isinstance(progress, dict) or not isinstance(training, dict):
        raise ModelFileError(f"{path}: corrupt checkpoint (no training progress)")
    recipe, trainer = progress.get("recipe"), progress.get("trainer")
    seed, seconds = progress.get("seed"), progress.get("seconds", 0.0)
    data = training.get("data") or {}
    if (
        not isinstance(recipe, dict)
        or not isinstance(trainer, dict)
        or not isinstance(data, dict)
        or not isinstance(seed, int)
        or not isinstance(seconds, (int, float))
    ):
        raise ModelFileError(f"{path}: corrupt checkpoint (malformed training progress)")
    return Checkpoint(
        path, meta, arrays, recipe, seed, data, trainer, prefixed(arrays, "optim/"), seconds
    )
