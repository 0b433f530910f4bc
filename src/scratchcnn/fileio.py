"""Atomic file writes, shared by model files, downloads, plots and the dataset cache.

A write goes to a temporary file in the target's folder, is flushed to disk, optionally
checked, and only then renamed over the target: readers see the old file or the new one, never
half of one, and a crash or a failed check leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | Path,
    write: Callable[[BinaryIO], None],
    verify: Callable[[Path], None] | None = None,
) -> None:
    """``write(file)`` into a temporary file, ``verify(temporary path)`` (which raises to
    refuse it), then rename onto ``path`` with the usual permissions (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
