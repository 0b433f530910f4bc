"""``Workspace``: named arrays an op reuses from one training step to the next.

A fresh array of a few megabytes is not free: the C allocator maps new pages for it and each
4 KiB page faults on its first touch. On these machines that cost 20-40% of a training step
(5,141 page faults a step of the keras net before, about 1,500 after). ``get(name, shape,
dtype)`` hands back the array it gave out last time under that name when shape and dtype match
(its memory is already mapped), else a new one. Only for arrays that never leave the op and
are dead by the time the same name is asked for again.

Copying a workspace (as the worker threads do when they copy the ops) gives an empty one: the
memory belongs to its owner.
"""

from __future__ import annotations

import numpy as np


class Workspace:
    """``Workspace(reuse=True)``; ``Workspace(reuse=False)`` hands out a new array every time,
    for inference passes and one-off calls."""

    def __init__(self, reuse: bool = True) -> None:
        self.reuse = reuse
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype`` (the same memory as last time)."""
        if not self.reuse:
            return np.empty(shape, dtype)
        array = self._arrays.get(name)
        if array is None or array.shape != tuple(shape) or array.dtype != dtype:
            array = self._arrays[name] = np.empty(shape, dtype)
        return array

    def __deepcopy__(self, memo: dict) -> Workspace:
        return Workspace(self.reuse)


FRESH_MEMORY = Workspace(reuse=False)
