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

Reading trusts nothing in the file. The metadata is read first (at most ``MAX_META_BYTES``)
and checked field by field; the architecture it declares says which arrays must follow and
their shapes, and it may declare at most ``MAX_VALUES`` values. Every other member is then
checked from the zip directory and its ``.npy`` header alone - its name, dtype, shape and
declared size - before a byte of its data is decompressed, and read only when it is exactly
what the architecture predicts. So a small file cannot make the reader hold more than the
declared arrays (read once, then copied into the model), and any problem is one
:class:`ModelFileError` naming the file.

Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the
target, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DATASETS
from ..errors import ModelFileError
from ..fileio import atomic_write
from ..nn.im2col import pair
from ..training import ARCHITECTURES, build

FORMAT = "scratchcnn-model"
FORMAT_VERSION = 2
MAX_META_BYTES = 16 << 20  # the JSON document: a history of thousands of epochs fits
MAX_VALUES = 64_000_000  # parameter values a model file may declare (256 MB in float32)
MAX_LAYERS = 1000
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
NAME = re.compile(r"((param|ema)/\d+\.[a-z_]+|optim/\d+\.[a-z_]+/[a-z_]+|optim/(steps|lr))\.npy")


def save_arrays(path: str | Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``meta`` and ``arrays`` as one model file, atomically."""
    doc = dict(meta, format=FORMAT, format_version=FORMAT_VERSION)
    text = json.dumps(doc, indent=1, allow_nan=False)  # NaN is not JSON: never write it
    blob = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    payload = {"__meta__": blob, **arrays}
    atomic_write(path, lambda out: np.savez(out, **payload))


# -- reading ----------------------------------------------------------------------------------


def load_arrays(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a model file: its checked metadata and the arrays its architecture declares."""
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a model file")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            if "__meta__.npy" not in members:
                raise ModelFileError(f"{path}: not a scratchcnn model file (no metadata)")
            info = members.pop("__meta__.npy")
            blob = _read_npy(archive, info, (np.dtype(np.uint8),), None, MAX_META_BYTES)
            meta = check_meta(_parse_json(blob), path)
            expected = expected_arrays(meta, path)
            arrays = {}
            for name, info in members.items():
                key = name[: -len(".npy")]
                if not NAME.fullmatch(name) or key not in expected:
                    raise ModelFileError(
                        f"{path}: unexpected entry {name[:60]!r} for this architecture"
                    )
                dtypes = (np.dtype(np.int64),) if key == "optim/steps" else FLOATS
                arrays[key] = _read_npy(archive, info, dtypes, expected[key], MAX_VALUES * 8)
    except ModelFileError as err:
        message = str(err) if str(err).startswith(str(path)) else f"{path}: {err}"
        raise ModelFileError(message) from None
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        ValueError,
        NotImplementedError,  # an unsupported compression method
        RuntimeError,  # an encrypted member
        struct.error,
        zlib.error,
    ) as err:
        raise ModelFileError(f"{path}: not a readable scratchcnn model file ({err})") from None
    missing = sorted(k for k in expected if k.startswith("param/") and k not in arrays)
    if missing:
        raise ModelFileError(
            f"{path}: parameters do not match the architecture; missing: {missing[0]}"
        )
    return meta, arrays


def _read_npy(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    dtypes: tuple[np.dtype, ...],
    shape: tuple[int, ...] | None,
    limit: int,
) -> np.ndarray:
    """One ``.npy`` member, checked from the zip directory and its header before its data is
    read: one of ``dtypes``, exactly ``shape`` (None: any 1-D), and a declared size under
    ``limit`` bytes that matches the header."""
    if info.file_size > limit + 4096:
        raise ModelFileError(f"{info.filename} declares {info.file_size:,} bytes: too large")
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(stream, max_header_size=4096)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(stream, max_header_size=4096)
        else:
            raise ModelFileError(f"{info.filename}: unsupported .npy version {version}")
        found_shape, fortran, dtype = header
        if dtype not in dtypes:
            raise ModelFileError(f"{info.filename}: holds {dtype}, not {dtypes[0]}")
        if shape is None and len(found_shape) != 1:
            raise ModelFileError(f"{info.filename}: not a byte string")
        if shape is not None and tuple(found_shape) != tuple(shape):
            raise ModelFileError(
                f"{info.filename}: shape {tuple(found_shape)}, the architecture needs {shape}"
            )
        size = math.prod(found_shape) * dtype.itemsize
        if stream.tell() + size != info.file_size:
            raise ModelFileError(f"{info.filename}: its size does not match its header")
        data = stream.read(size)
        if len(data) != size:
            raise ModelFileError(f"{info.filename}: truncated")
    order = "F" if fortran else "C"
    return np.frombuffer(data, dtype=dtype).reshape(found_shape, order=order).copy()


def _parse_json(blob: np.ndarray) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not a number JSON allows")

    try:
        return json.loads(blob.tobytes().decode("utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ModelFileError(f"corrupt model metadata ({str(err)[:80]})") from None


# -- the metadata, field by field -------------------------------------------------------------

Number = (int, float)


def _fail(path: Path, message: str) -> None:
    raise ModelFileError(f"{path}: corrupt model metadata: {message}")


def _is(value: Any, kinds: type | tuple) -> bool:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, kinds)


# Optional fields the application reads, with the types they must have when present.
TRAINING_FIELDS = {
    "seconds": Number,
    "seed": int,
    "train_samples": int,
    "val_samples": int,
    "started": (str, type(None)),
    "finished": str,
    "engine": str,
    "recipe": dict,
    "data": dict,
    "machine": dict,
}
HISTORY_FIELDS = {
    "epoch": int,
    "loss": Number,
    "accuracy": Number,
    "val_loss": (*Number, type(None)),
    "val_accuracy": (*Number, type(None)),
    "lr": Number,
    "seconds": Number,
    "samples_per_second": Number,
}


def check_meta(meta: Any, path: str | Path) -> dict:
    """The model file's JSON document, checked: every field the application reads is there
    with the right type and a sensible value, or ModelFileError says which is not."""
    path = Path(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a scratchcnn model file")
    version = meta.get("format_version")
    if not _is(version, int) or version < 1:
        _fail(path, f"format_version {str(version)[:20]!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this scratchcnn reads "
            f"({FORMAT_VERSION}); upgrade scratchcnn"
        )
    if not _is(meta.get("architecture"), str) or len(meta["architecture"]) > 100:
        _fail(path, "architecture must be a name")
    if meta.get("dataset") not in DATASETS:
        _fail(path, f"unknown dataset {str(meta.get('dataset'))[:40]!r}")
    norm = meta.get("normalization", {})
    if not isinstance(norm, dict) or not all(
        _is(norm.get(k, 1.0), Number) for k in ("mean", "std")
    ):
        _fail(path, "normalization needs a finite mean and std")
    if norm.get("std", 1.0) <= 0:
        _fail(path, "normalization std must be positive")
    if not _is(meta.get("tta", False), bool):
        _fail(path, "tta must be true or false")
    calibration = meta.get("calibration", {})
    if not isinstance(calibration, dict):
        _fail(path, "calibration must be an object")
    if (
        not _is(calibration.get("temperature", 1.0), Number)
        or calibration.get("temperature", 1.0) <= 0
    ):
        _fail(path, "calibration temperature must be a positive number")
    if (
        not _is(calibration.get("threshold", 0.5), Number)
        or not 0 <= calibration.get("threshold", 0.5) <= 1
    ):
        _fail(path, "calibration threshold must be in [0, 1]")
    metrics = meta.get("metrics", {})
    if not isinstance(metrics, dict) or not all(
        _is(v, (*Number, type(None))) for v in metrics.values()
    ):
        _fail(path, "metrics must be numbers")
    training = meta.get("training", {})
    if not isinstance(training, dict):
        _fail(path, "training must be an object")
    for key, kinds in TRAINING_FIELDS.items():
        if key in training and not _is(training[key], kinds):
            _fail(path, f"training.{key} has the wrong type")
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        _fail(path, "history must be a list of epochs")
    for record in history:
        for key, kinds in HISTORY_FIELDS.items():
            if not _is(record.get(key), kinds):
                _fail(path, f"history field {key} is missing or has the wrong type")
    model = meta.get("model")
    if version >= 2 or model is not None:
        if not isinstance(model, dict) or not isinstance(model.get("layers"), list):
            _fail(path, "no layer list")
        if len(model["layers"]) > MAX_LAYERS:
            _fail(path, f"more than {MAX_LAYERS} layers")
    elif meta["architecture"] not in ARCHITECTURES:
        _fail(path, f"unknown architecture {meta['architecture'][:40]!r}")
    return meta


def model_config(meta: dict) -> dict:
    """The layer list of a checked ``meta``: its own, or that of the named net (format 1)."""
    if "model" in meta:
        return meta["model"]
    classes = len(DATASETS[meta["dataset"]].classes)
    return build(meta["architecture"], num_classes=classes).config()


def parameter_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """``{"<layer index>.<name>": shape}`` of every parameter and buffer the layer list
    declares, worked out from the list alone (nothing is allocated)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, spec in enumerate(config["layers"]):
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind == "Conv2D":
            f, c = int(spec["out_channels"]), int(spec["in_channels"])
            shapes[f"{i}.weight"] = (f, c, *pair(spec["kernel_size"], "kernel_size"))
            shapes[f"{i}.bias"] = (f,)
        elif kind == "Dense":
            shapes[f"{i}.weight"] = (int(spec["out_features"]), int(spec["in_features"]))
            shapes[f"{i}.bias"] = (int(spec["out_features"]),)
        elif kind in ("BatchNorm1D", "BatchNorm2D"):
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{i}.{name}"] = (int(spec["num_features"]),)
    return shapes


def expected_arrays(meta: dict, path: Path) -> dict[str, tuple[int, ...]]:
    """Every array name the file may hold and its shape; the total is bounded."""
    try:
        shapes = parameter_shapes(model_config(meta))
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise ModelFileError(f"{path}: corrupt layer list ({str(err)[:60]})") from None
    if any(min(shape, default=1) < 1 for shape in shapes.values()):
        raise ModelFileError(f"{path}: corrupt layer list (a size below 1)")
    total = sum(math.prod(shape) for shape in shapes.values())
    if total > MAX_VALUES:
        raise ModelFileError(
            f"{path}: the architecture declares {total:,} parameter values, more than the "
            f"{MAX_VALUES:,} a model file may hold"
        )
    expected = {f"param/{name}": shape for name, shape in shapes.items()}
    if "checkpoint" in meta:  # optimizer slots and the EMA mirror the parameters
        expected.update({f"ema/{name}": shape for name, shape in shapes.items()})
        for name, shape in shapes.items():
            if not name.endswith(("running_mean", "running_var")):
                for slot in ("momentum", "m", "v"):
                    expected[f"optim/{name}/{slot}"] = shape
        expected["optim/steps"] = expected["optim/lr"] = ()
    return expected


def prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose names start with ``prefix``, under their names without it."""
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


# -- checkpoints ----------------------------------------------------------------------------


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
        or not _is(seed, int)
        or not _is(seconds, Number)
    ):
        raise ModelFileError(f"{path}: corrupt checkpoint (malformed training progress)")
    return Checkpoint(
        path, meta, arrays, recipe, seed, data, trainer, prefixed(arrays, "optim/"), seconds
    )
