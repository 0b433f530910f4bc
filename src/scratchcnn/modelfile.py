"""Model files: one ``.npz`` of arrays plus a JSON document, read without pickle.

    __meta__            uint8 bytes of a UTF-8 JSON document: format, format_version,
                        scratchcnn_version, architecture, dataset, classes, normalisation,
                        metrics, training details, history (and, in a checkpoint, progress)
    param/<i>.<name>    each layer's parameters and buffers
    optim/<name>/<slot> optimizer state (checkpoints only)

Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the
target, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .errors import ModelFileError
from .fileio import atomic_write

FORMAT = "scratchcnn-model"
FORMAT_VERSION = 1


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
        raise ModelFileError(f"{path}: not a scratchcnn model file (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this scratchcnn reads "
            f"({FORMAT_VERSION}); upgrade scratchcnn"
        )
    return meta, arrays
