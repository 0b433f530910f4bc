"""Why the worker threads gain less than two cores: short NumPy calls on two threads.

    python benchmarks/threads.py

The compiled path splits a batch over two threads, and NumPy releases the GIL inside each call,
so the threads should run side by side. This times the same work alone, on two threads at once
and in two processes at once (each its own arrays; BLAS on one thread):

* ReLU as ``np.maximum(y, zeros, out=y)`` on float32 arrays from 32 KiB to 32 MiB, called
  until 64 Mi values have gone through;
* the keras net's two inference ops on 500 images each (``ConvInferenceOp``; two threads:
  two copies of the op on the two halves of 1,000 images, as the worker threads run them), the
  first one also with its patches gathered chunk by chunk (``GATHER_BYTES = 1``), as it was
  before this was measured.

"ratio" is the time of the pair over the time of one alone: 1.0 is perfect overlap, 2.0 none.
Each figure is the median of 15 rounds. Writes benchmarks/results/threads.txt.
"""

from __future__ import annotations

import copy
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

OUT = Path(__file__).resolve().parent / "results" / "threads.txt"
ROUNDS = 15
VALUES = 1 << 26

# A child process: the ReLU loop on arrays of argv[1] values until argv[2] values have gone
# through, its seconds printed.
RELU_CHILD = """
import sys, time
import numpy as np
size, values = int(sys.argv[1]), int(sys.argv[2])
y, zeros = np.random.rand(size).astype(np.float32), np.zeros(size, np.float32)
start = time.perf_counter()
for _ in range(max(1, values // size)):
    np.maximum(y, zeros, out=y)
print(time.perf_counter() - start)
"""


def on_two_threads(first: Callable[[], object], second: Callable[[], object]) -> float:
    """Seconds until both functions, started together on two threads, have returned."""
    threads = [threading.Thread(target=work) for work in (first, second)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def alone(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def in_two_processes(size: int) -> tuple[float, float]:
    """Seconds of the ReLU loop in one child process alone, and in the slower of two children
    started together (each times its own loop, so interpreter start-up is left out)."""
    command = [sys.executable, "-c", RELU_CHILD, str(size), str(VALUES)]

    def slowest(count: int) -> float:
        children = [
            subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(count)
        ]
        return max(float(child.communicate()[0]) for child in children)

    return slowest(1), slowest(2)


def relu_loop(size: int) -> Callable[[], None]:
    y, zeros = np.random.rand(size).astype(np.float32), np.zeros(size, np.float32)

    def work() -> None:
        for _ in range(max(1, VALUES // size)):
            np.maximum(y, zeros, out=y)

    return work


def row(label: str, one: list[float], pair: list[float]) -> str:
    a, b = statistics.median(one), statistics.median(pair)
    return f"{label:<58} {a * 1e3:>9.1f} {b * 1e3:>9.1f} {b / a:>6.2f}"


def main() -> None:
    from scratchcnn.app import Classifier
    from scratchcnn.fast import inference

    lines = [f"{'work':<58} {'alone ms':>9} {'pair ms':>9} {'ratio':>6}"]
    with threadpool_limits(1, user_api="blas"):
        for size in (8 << 10, 32 << 10, 256 << 10, 1 << 20, 8 << 20):
            first, second = relu_loop(size), relu_loop(size)
            one, pair, one_process, pair_process = [], [], [], []
            for _ in range(ROUNDS):
                one.append(alone(first))
                pair.append(on_two_threads(first, second))
                solo, both = in_two_processes(size)
                one_process.append(solo)
                pair_process.append(both)
            kib = size * 4 // 1024
            lines.append(row(f"ReLU, {kib:,} KiB arrays, two threads", one, pair))
            lines.append(row(f"ReLU, {kib:,} KiB arrays, two processes", one_process, pair_process))
            print(lines[-2], lines[-1], sep="\n", flush=True)
        clf = Classifier.create("keras", dataset="mnist", seed=0)
        images = np.random.default_rng(0).integers(0, 256, (1000, 28, 28), dtype=np.uint8)
        x = clf.runner.model.check_input(clf.prepare(images))
        ops = clf.runner.inference_ops
        twins = copy.deepcopy(ops)
        inputs = outputs = [x[:500], x[500:]]
        cases = [(0, inference.GATHER_BYTES), (0, 1), (1, inference.GATHER_BYTES)]
        for index, gather_bytes in cases:
            inference.GATHER_BYTES = gather_bytes
            op, twin = ops[index], twins[index]
            first, second = inputs if index == 0 else outputs
            one, pair = [], []
            for _ in range(ROUNDS):
                one.append(alone(lambda op=op, x=first: op.forward(x, training=False)))
                pair.append(
                    on_two_threads(
                        lambda op=op, x=first: op.forward(x, training=False),
                        lambda op=twin, x=second: op.forward(x, training=False),
                    )
                )
            how = ", patches chunk by chunk" if gather_bytes == 1 else ""
            lines.append(row(f"keras inference op {index + 1}, 500 images{how}", one, pair))
            print(lines[-1], flush=True)
            if index == 0:
                outputs = [op.forward(half, training=False) for half in inputs]
        inference.GATHER_BYTES = cases[0][1]
    OUT.write_text(
        "time alone and as a pair (two threads or two processes at once), median of "
        f"{ROUNDS} rounds; ratio = pair / alone (1.0: full overlap, 2.0: none)\n"
        + "\n".join(lines)
        + "\n"
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
