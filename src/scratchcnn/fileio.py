"""Atomic file writes, shared by model files, downloads, plots and the dataset cache.

A write goes to a temporary file in the target's folder, is flushed to disk, optionally
checked, and only then renamed over the target: readers see the old file or the new one, never
half of one, and a crash or a failed check leaves nothing behind.

A process killed mid-write (SIGKILL, a power cut) cannot clean up after itself: its temporary
file stays. Temporary names carry the writer's process id, ``.<name>.<pid>.<random>.part``,
and every write to a target first removes the leftovers of earlier writers of that target that
are no longer running.
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


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    return True


def remove_stale_parts(path: Path) -> list[Path]:
    """Delete the temporary files that dead writers of ``path`` left beside it; returns
    them. A leftover whose writer is still running is in use and stays."""
    removed = []
    for part in path.parent.glob(f".{path.name}.*.part"):
        pid = part.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed


def atomic_write(
    path: str | Path,
    write: Callable[[BinaryIO], None],
    verify: Callable[[Path], None] | None = None,
) -> None:
    """``write(file)`` into a temporary file, ``verify(temporary path)`` (which raises to
    refuse it), then rename onto ``path`` with the usual permissions (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    prefix = f".{path.name}.{os.getpid()}."
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".part")
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
