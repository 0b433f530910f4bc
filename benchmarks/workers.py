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

"2 procs" is what a split over two processes instead of two threads could reach at most: two
child processes (BLAS on one thread each), each with its own copy of the net compiled with one
worker, each running the same number of steps (or passes) on its half of the batch, started
together in each window, which ends when both are done. They exchange nothing (no summed
gradients, no shared batch norm sums), so it is an upper bound, not a working split. "2p/2" is
its rate over that of two worker threads. Writes benchmarks/results/workers.txt.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scratchcnn import SGD, SoftmaxCrossEntropy
from scratchcnn.app.bench import make_model
from scratchcnn.fast import compile, keep_freed_memory

OUT = Path(__file__).resolve().parent / "results" / "workers.txt"
ARCHS = ("seed", "keras", "user")

# A child process of "2 procs": its copy of the net and half a batch; "ready", then for each
# line n it reads, n steps (or inference passes), then "done".
CHILD = """
import sys
import numpy as np
from scratchcnn import SGD, SoftmaxCrossEntropy
from scratchcnn.app.bench import make_model
from scratchcnn.fast import compile, keep_freed_memory
keep_freed_memory()
arch, what, half = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = make_model(arch, seed=0)
net = compile(model, 1)
rng = np.random.default_rng(1)
x = rng.standard_normal((half, *model.input_shape), dtype=np.float32)
y = rng.integers(0, 10, half)
loss = SoftmaxCrossEntropy()
optimizer = SGD(model.parameters(), lr=1e-3, momentum=0.9)
def run():
    if what == "infer":
        net.forward(x, training=False)
    else:
        net.train_step(x, y, loss)
        optimizer.step()
for _ in range(3):
    run()
print("ready", flush=True)
for line in sys.stdin:
    for _ in range(int(line)):
        run()
    print("done", flush=True)
"""


class TwoProcesses:
    """The two children of "2 procs" for one net and batch; ``window(calls)`` starts
    ``calls`` steps in each and returns when both are done."""

    def __init__(self, arch: str, what: str, batch: int) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-c", CHILD, arch, what, str(batch // 2)]
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True, "env": env}
        self.children = [subprocess.Popen(command, **pipes) for _ in range(2)]
        for child in self.children:
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a child process of '2 procs' did not start")

    def window(self, calls: int) -> None:
        for child in self.children:
            child.stdin.write(f"{calls}\n")
            child.stdin.flush()
        for child in self.children:
            if child.stdout.readline().strip() != "done":
                raise RuntimeError("a child process of '2 procs' stopped")

    def close(self) -> None:
        for child in self.children:
            child.stdin.close()
            child.wait()


def rates(runs: dict[str, Callable[[int], None]], images: int, calls: int, rounds: int) -> dict:
    """Images a second of each run (``run(calls)`` runs a window of calls), interleaved, the
    median over rounds."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up: the copies and workspaces of a split model
        run(3)
    for round_ in range(rounds):
        for name in sorted(runs, reverse=round_ % 2 == 1):
            start = time.perf_counter()
            runs[name](calls)
            seconds[name].append((time.perf_counter() - start) / calls)
    return {name: images / statistics.median(s) for name, s in seconds.items()}


def repeat(run: Callable[[], None], calls: int) -> None:
    for _ in range(calls):
        run()


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
        "images/s with one worker thread (BLAS on 2 threads) and two (BLAS on 1 each), and the "
        f"bound of two processes (see benchmarks/workers.py); medians of {args.rounds} "
        "interleaved rounds",
        f"{'net':<6} {'what':<16} {'1 worker':>9} {'2 workers':>10} {'1/2':>5} "
        f"{'2 procs':>9} {'2p/2':>5}",
    ]
    for arch in ARCHS:
        model = make_model(arch, seed=0)
        compiled = {w: compile(model, w, processes=False) for w in (1, 2)}
        loss = SoftmaxCrossEntropy()
        optimizer = SGD(model.parameters(), lr=1e-3, momentum=0.9)
        cases = []
        for batch in (64, 256):
            x = rng.standard_normal((batch, *model.input_shape), dtype=np.float32)
            y = rng.integers(0, 10, batch)
            step = functools.partial(train_step, x=x, y=y, loss=loss, optimizer=optimizer)
            cases.append(("train", batch, max(2, 512 // batch), step))
        x = rng.standard_normal((1000, *model.input_shape), dtype=np.float32)
        cases.append(("infer", 1000, 2, functools.partial(infer, x=x)))
        for what, batch, calls, run in cases:
            runs: dict[str, Callable[[int], None]] = {
                str(w): functools.partial(repeat, functools.partial(run, c))
                for w, c in compiled.items()
            }
            processes = TwoProcesses(arch, what, batch)
            runs["procs"] = processes.window
            try:
                got = rates(runs, batch, calls, args.rounds)
            finally:
                processes.close()
            one, two, procs = got["1"], got["2"], got["procs"]
            line = (
                f"{arch:<6} {f'{what} batch {batch}':<16} {one:>9,.0f} {two:>10,.0f} "
                f"{one / two:>5.2f} {procs:>9,.0f} {procs / two:>5.2f}"
            )
            print(line, flush=True)
            lines.append(line)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
