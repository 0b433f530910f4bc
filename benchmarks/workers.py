"""What the second worker thread buys: the compiled path with one worker against two.

    python benchmarks/workers.py [--rounds 30]

``compile(model, workers=2)`` splits each batch in two parts, one per thread, each part's BLAS
on one thread; ``workers=1`` runs the whole batch in the caller's thread and lets BLAS use its
two threads in each product. For the bench's nets (``scratchcnn.app.bench.make_model``, the
same weights), in one process, the two alternate in windows (the order flipped each round, so
a slow spell of this machine hits both): training steps (``train_step`` + an SGD step) at batch
64 and 256, and inference of 1000 images (``forward(x, training=False)``). Each figure is the
median over the rounds; malloc keeps freed memory, as in the bench. "1/2" is the rate with one
worker over the rate with two: 1.0 means the second thread bought nothing.
Writes benchmarks/results/workers.txt.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scratchcnn import SGD, SoftmaxCrossEntropy
from scratchcnn.app.bench import make_model
from scratchcnn.fast import compile, keep_freed_memory

OUT = Path(__file__).resolve().parent / "results" / "workers.txt"
ARCHS = ("seed", "keras", "user")


def rates(runs: dict[int, Callable[[], None]], images: int, calls: int, rounds: int) -> dict:
    """Images a second of each run (keyed by workers), interleaved, the median over rounds."""
    seconds: dict[int, list[float]] = {w: [] for w in runs}
    for run in runs.values():  # warm-up: the copies and workspaces of a split model
        for _ in range(3):
            run()
    for round_ in range(rounds):
        for workers in sorted(runs, reverse=round_ % 2 == 1):
            start = time.perf_counter()
            for _ in range(calls):
                runs[workers]()
            seconds[workers].append((time.perf_counter() - start) / calls)
    return {w: images / statistics.median(s) for w, s in seconds.items()}


def train_step(compiled, x: np.ndarray, y: np.ndarray, loss, optimizer) -> None:
    compiled.train_step(x, y, loss)
    optimizer.step()


def infer(compiled, x: np.ndarray) -> None:
    compiled.forward(x, training=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    keep_freed_memory()
    rng = np.random.default_rng(0)
    lines = [
        f"images/s with one worker thread (BLAS on 2 threads) and two (BLAS on 1 each); medians "
        f"of {args.rounds} interleaved rounds in one process",
        f"{'net':<6} {'what':<16} {'1 worker':>9} {'2 workers':>10} {'1/2':>5}",
    ]
    for arch in ARCHS:
        model = make_model(arch, seed=0)
        compiled = {w: compile(model, w) for w in (1, 2)}
        loss = SoftmaxCrossEntropy()
        optimizer = SGD(model.parameters(), lr=1e-3, momentum=0.9)
        cases = []
        for batch in (64, 256):
            x = rng.standard_normal((batch, *model.input_shape), dtype=np.float32)
            y = rng.integers(0, 10, batch)

            step = functools.partial(train_step, x=x, y=y, loss=loss, optimizer=optimizer)
            cases.append((f"train batch {batch}", batch, max(2, 512 // batch), step))
        x = rng.standard_normal((1000, *model.input_shape), dtype=np.float32)
        cases.append(("infer batch 1000", 1000, 2, functools.partial(infer, x=x)))
        for what, images, calls, run in cases:
            runs = {w: functools.partial(run, c) for w, c in compiled.items()}
            got = rates(runs, images, calls, args.rounds)
            line = f"{arch:<6} {what:<16} {got[1]:>9,.0f} {got[2]:>10,.0f} {got[1] / got[2]:>5.2f}"
            print(line, flush=True)
            lines.append(line)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
