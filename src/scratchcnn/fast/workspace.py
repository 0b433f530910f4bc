"""``Workspace``: named arrays an op reuses from one training step to the next.

A fresh array of a few megabytes is not free: the C allocator maps new pages for it and each
4 KiB page faults on its first touch. On these machines that cost 20-40% of a training step
(5,141 page faults a step of the keras net before, about 1,500 after). ``get(name, shape,
dtype)`` hands back the memory it gave out last time under that name, viewed in the asked
shape, when it is large enough (it is already mapped), else new memory. Only for arrays that
never leave the op and are dead by the time the same name is asked for again.

Copying a workspace (as the worker threads do when they copy the ops) gives an empty one: the
memory belongs to its owner.
"""

from __future__ import annotations

import math

import numpy as np


class Workspace:
    """``Workspace(reuse=True)``; ``Workspace(reuse=False)`` hands out a new array every time,
    for inference passes and one-off calls."""

    def __init__(self, reuse: bool = True) -> None:
        self.reuse = reuse
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype`` (the same memory as
        last time, when that is large enough)."""
        if not self.reuse:
            return np.empty(shape, dtype)
        size = math.prod(shape)
        memory = self._arrays.get(name)
        if memory is None or memory.dtype != dtype or memory.size < size:
            memory = self._arrays[name] = np.empty(size, dtype)
        return memory[:size].reshape(shape)

    def __deepcopy__(self, memo: dict) -> Workspace:
        return Workspace(self.reuse)


FRESH_MEMORY = Workspace(reuse=False)
