"""Inference split over two processes instead of two threads, timed.

    python benchmarks/process_split.py [--rounds 20]

``benchmarks/workers.py`` showed that two worker threads buy little here (short NumPy calls
take turns with the GIL) and bounded what two processes could give. This times the library's
split over a child process (``scratchcnn.fast.processes``, started before the timing), with
every exchange it makes on each call: the parameters and buffers copied into shared memory,
the child's part of the batch copied there and its logits read back.

For the bench's nets at batch 1000, interleaved in windows of two calls as
``benchmarks/workers.py`` interleaves them: ``compile(model, 1)``, ``compile(model, 2,
processes=False)`` (two threads) and ``compile(model, 2)`` (this process and a child); images/s,
medians over the rounds; malloc keeps freed memory, as in the bench. Whether the split's logits
equal those of the two threads bit for bit is checked and printed. Writes
benchmarks/results/process-split.txt.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scratchcnn.app.bench import make_model
from scratchcnn.fast import compile, keep_freed_memory
from workers import infer, rates, repeat  # this folder's benchmarks/workers.py

OUT = Path(__file__).resolve().parent / "results" / "process-split.txt"
ARCHS = ("seed", "keras", "user", "fast")
BATCH = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    keep_freed_memory()
    lines = [
        f"inference of {BATCH} images, images/s: one worker thread (BLAS on 2 threads), two "
        "worker threads, and this process with a child process (scratchcnn.fast.processes); "
        f"medians of {args.rounds} interleaved rounds",
        f"{'net':<6} {'1 worker':>9} {'2 threads':>10} {'2 procs':>9} {'procs/threads':>13} "
        "same logits",
    ]
    for arch in ARCHS:
        model = make_model(arch, seed=0)
        x = np.random.default_rng(0).standard_normal((BATCH, *model.input_shape), model.dtype)
        split, threads = compile(model, 2), compile(model, 2, processes=False)
        try:
            if not split.start_processes(BATCH):
                print(f"{arch}: the batch is too small to split over processes; threads only")
            same = np.array_equal(
                split.forward(x, training=False), threads.forward(x, training=False)
            )
            runs: dict[str, Callable[[int], None]] = {
                "1": functools.partial(repeat, functools.partial(infer, compile(model, 1), x)),
                "2": functools.partial(repeat, functools.partial(infer, threads, x)),
                "procs": functools.partial(repeat, functools.partial(infer, split, x)),
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
