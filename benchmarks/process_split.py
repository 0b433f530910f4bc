"""A prototype of inference split over two processes instead of two threads, timed.

    python benchmarks/process_split.py [--rounds 20]

Not in the library: this measures the design before it is built. ``benchmarks/workers.py``
showed that two worker threads buy little here (short NumPy calls take turns with the GIL) and
bounded what two processes could give. This prototype makes the exchanges a working split
needs, on every call: the parameters and buffers (batch norm's running statistics) copied into
shared memory, which the child's copy of the net reads them from; the second half of the batch
copied into shared memory; the child's logits read back from it. The caller's half runs
meanwhile in this process (compiled with one worker, BLAS on one thread). The child is started
once ("spawn") with BLAS on one thread.

For the bench's nets at batch 1000, interleaved in windows of two calls as
``benchmarks/workers.py`` interleaves them: ``compile(model, 1)``, ``compile(model, 2)`` (two
threads) and the process split; images/s, medians over the rounds; malloc keeps freed memory,
as in the bench. Whether the split's logits equal those of the two threads bit for bit is
checked and printed. Writes benchmarks/results/process-split.txt.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
from collections.abc import Callable
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from scratchcnn.app.bench import make_model
from scratchcnn.fast import compile, keep_freed_memory
from scratchcnn.fast.parallel import single_threaded_blas
from workers import infer, rates, repeat  # this folder's benchmarks/workers.py

OUT = Path(__file__).resolve().parent / "results" / "process-split.txt"
ARCHS = ("seed", "keras", "user", "fast")
BATCH = 1000


def arrays(model) -> list[tuple[dict, str]]:
    """Where every parameter and buffer of ``model`` lives: (its dict, its key), in order."""
    return [(d, key) for layer in model.layers for d in (layer.params, layer.buffers) for key in d]


def child(conn, arch: str, names: tuple[str, str, str]) -> None:
    """The child process: its copy of the net reads its parameters from shared memory, then
    for each part size it receives, runs inference on that many images and writes logits."""
    keep_freed_memory()
    model = make_model(arch, seed=0)
    net = compile(model, 1)
    state, inputs, logits = (shared_memory.SharedMemory(name) for name in names)
    offset = 0
    for d, key in arrays(model):
        value = d[key]
        d[key] = np.ndarray(value.shape, value.dtype, buffer=state.buf, offset=offset)
        offset += value.nbytes
    conn.send("ready")
    while (n := conn.recv()) is not None:
        x = np.ndarray((n, *model.input_shape), model.dtype, buffer=inputs.buf)
        out = net.forward(x, training=False)
        np.ndarray(out.shape, out.dtype, buffer=logits.buf)[...] = out
        conn.send(out.shape)
    for memory in (state, inputs, logits):
        memory.close()


class ProcessSplit:
    """Inference of a batch, its first half here and its second in a child process."""

    def __init__(self, model, arch: str, most: int = BATCH) -> None:
        self.model, self.local = model, compile(model, 1)
        size = sum(d[key].nbytes for d, key in arrays(model))
        itemsize = np.dtype(model.dtype).itemsize
        self.state = shared_memory.SharedMemory(create=True, size=size)
        self.inputs = shared_memory.SharedMemory(
            create=True, size=most * int(np.prod(model.input_shape)) * itemsize
        )
        self.logits = shared_memory.SharedMemory(create=True, size=most * 10 * itemsize)
        context = multiprocessing.get_context("spawn")
        self.conn, theirs = context.Pipe()
        names = (self.state.name, self.inputs.name, self.logits.name)
        saved = {key: os.environ.get(key) for key in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
        os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")  # read as it starts
        self.process = context.Process(target=child, args=(theirs, arch, names), daemon=True)
        self.process.start()
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value
        if self.conn.recv() != "ready":
            raise RuntimeError("the child process did not start")

    def forward(self, x: np.ndarray) -> np.ndarray:
        offset = 0
        for d, key in arrays(self.model):  # the parameters as they are now
            value = d[key]
            view = np.ndarray(value.shape, value.dtype, buffer=self.state.buf, offset=offset)
            np.copyto(view, value)
            offset += value.nbytes
        half, rest = len(x) // 2, x[len(x) // 2 :]
        np.ndarray(rest.shape, rest.dtype, buffer=self.inputs.buf)[...] = rest
        self.conn.send(len(rest))
        with single_threaded_blas():
            mine = self.local.forward(x[:half], training=False)
        shape = self.conn.recv()
        theirs = np.ndarray(shape, mine.dtype, buffer=self.logits.buf)
        return np.concatenate([mine, theirs])

    def close(self) -> None:
        self.conn.send(None)
        self.process.join()
        for memory in (self.state, self.inputs, self.logits):
            memory.close()
            memory.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    keep_freed_memory()
    lines = [
        f"inference of {BATCH} images, images/s: one worker thread (BLAS on 2 threads), two "
        "worker threads, and the prototype split over two processes (see "
        f"benchmarks/process_split.py); medians of {args.rounds} interleaved rounds",
        f"{'net':<6} {'1 worker':>9} {'2 threads':>10} {'2 procs':>9} {'procs/threads':>13} "
        "same logits",
    ]
    for arch in ARCHS:
        model = make_model(arch, seed=0)
        x = np.random.default_rng(0).standard_normal((BATCH, *model.input_shape), model.dtype)
        split = ProcessSplit(model, arch)
        try:
            threads = compile(model, 2)
            same = np.array_equal(split.forward(x), threads.forward(x, training=False))
            runs: dict[str, Callable[[int], None]] = {
                "1": functools.partial(repeat, functools.partial(infer, compile(model, 1), x)),
                "2": functools.partial(repeat, functools.partial(infer, threads, x)),
                "procs": functools.partial(repeat, functools.partial(split.forward, x)),
            }
            rate = rates(runs, BATCH, 2, args.rounds)
        finally:
            split.close()
        line = (
            f"{arch:<6} {rate['1']:>9,.0f} {rate['2']:>10,.0f} {rate['procs']:>9,.0f} "
            f"{rate['procs'] / rate['2']:>13.2f} {'yes' if same else 'no'}"
        )
        print(line, flush=True)
        lines.append(line)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
