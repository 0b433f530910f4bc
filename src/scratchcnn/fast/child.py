"""The program a child process of ``processes.py`` runs: ``python -m scratchcnn.fast.child
SOCKET_FD MEMORY_FD SIZE``.

It receives (model, capacity) once, makes the model's parameters and buffers views into the
shared state block, compiles it with one worker, says "ready", then for each "run n" computes
the logits of the n samples in its input block into its logits block and says "done" (or
("error", reason)). It exits when told to (None) or when its parent is gone (end of file).
"""

from __future__ import annotations

import mmap
import sys
from multiprocessing.connection import Connection

from .allocator import keep_freed_memory
from .compiled import compile
from .processes import Blocks, arrays


def main(argv: list[str]) -> None:
    conn = Connection(int(argv[0]))
    memory = mmap.mmap(int(argv[1]), int(argv[2]))
    keep_freed_memory()
    try:
        model, capacity = conn.recv()
        blocks = Blocks(model, capacity, memory)
        for (d, key), block in zip(arrays(model), blocks.state, strict=True):
            d[key] = block  # the parent writes the current values here before each run
        net = compile(model, workers=1)
        net.forward(blocks.inputs[:1], training=False)  # builds the plan now, not on a call
        conn.send("ready")
    except EOFError:
        return
    except Exception as error:  # the parent falls back to threads and says why
        conn.send(("error", f"{type(error).__name__}: {error}"))
        return
    while True:
        try:
            n = conn.recv()
        except EOFError:
            return
        if n is None:
            return
        try:
            blocks.logits[:n] = net.forward(blocks.inputs[:n], training=False)
            conn.send("done")
        except Exception as error:
            conn.send(("error", f"{type(error).__name__}: {error}"))


if __name__ == "__main__":
    main(sys.argv[1:])
