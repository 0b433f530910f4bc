"""The program a child process of ``processes.py`` runs: ``python -m scratchcnn.fast.child
SOCKET_FD MEMORY_FD SIZE``.

It receives (model, capacity) once, makes the model's parameters and buffers views into the
shared state block (``processes.Blocks``), compiles it with one worker and says "ready". Then,
for each message:

    ("infer", n)           logits of the n samples in the input block
    ("train", n, loss, share, streams, chunk)
                           forward, loss and backward of a training part, in chunks of at
                           most ``chunk`` samples (``parallel.part_step``); gradients to the
                           grads block; each batch norm sends ("sums", array) and waits for
                           ("total", array), the whole batch's

it writes the logits to the logits block and answers ("done", its share of the loss or None),
or ("error", reason). It exits when told to (None) or when its parent is gone (end of file).
"""

from __future__ import annotations

import mmap
import sys
from multiprocessing.connection import Connection

import numpy as np

from .allocator import keep_freed_memory
from .compiled import compile
from .ops import Op
from .parallel import part_step
from .processes import Blocks, arrays


class ParentSums:
    """What the child's batch norms get as ``sync``: their part's sums go to the parent, the
    whole batch's come back. Not the ``leader``: the parent moves the running statistics."""

    leader = False

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def total(self, array: np.ndarray) -> np.ndarray:
        self.conn.send(("sums", array))
        kind, total = self.conn.recv()
        if kind != "total":
            raise RuntimeError(f"expected the batch's sums, got {kind!r}")
        return total


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
        net.forward(blocks.inputs[:1], training=False)  # builds the plans now, not on a call
        for op in net.ops:
            for norm in op.norm_ops() if isinstance(op, Op) else []:
                norm.sync = ParentSums(conn)
        conn.send("ready")
    except EOFError:
        return
    except Exception as error:  # the parent goes back to threads and says why
        conn.send(("error", f"{type(error).__name__}: {error}"))
        return
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        try:
            kind, n, *rest = message
            value = None
            x = blocks.inputs[:n]
            if kind == "infer":
                blocks.logits[:n] = net.forward(x, training=False)
            else:
                loss, share, streams, chunk = rest
                ops = net.ops
                for j, stream in streams.items():
                    ops[j].stream = stream
                logits, value = part_step(ops, x, blocks.labels[:n], loss, share, chunk)
                blocks.logits[:n] = logits
                for layer, grads in zip(model.layers, blocks.grads, strict=True):
                    for key, block in grads.items():
                        block[...] = layer.grads[key]
            conn.send(("done", value))
        except Exception as error:
            conn.send(("error", f"{type(error).__name__}: {error}"))


if __name__ == "__main__":
    main(sys.argv[1:])
