"""Batches split over two processes instead of two threads, timed.

    python benchmarks/process_split.py [--rounds 20]

``benchmarks/workers.py`` showed that two worker threads buy little here (short NumPy calls
take turns with the GIL) and bounded what two processes could give. This times the library's
split over a child process (``scratchcnn.fast.processes``, started before the timing), with
every exchange it makes on each call: the parameters and buffers copied into shared memory,
the child's part of the batch (and labels) copied there, its logits (and loss and gradients)
read back, the gradients summed.

For the bench's nets, training steps (``train_step`` and an SGD step) at batch 64 and 256 and
inference at batch 1000, interleaved in windows of ``WINDOW`` calls (with
``benchmarks/workers.py``'s ``rates``): ``compile(model, 1)``, ``compile(model, 2,
processes=False)`` (two threads) and ``compile(model, 2)`` (this process and a child);
images/s, medians over the rounds; malloc keeps freed memory, as in the bench. Whether the
split's logits equal those of the two threads bit for bit is checked and printed (in training,
for the first step from the same parameters). Writes benchmarks/results/process-split.txt.
"""

from __future__ import annotations

import argparse
import copy
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scratchcnn import SGD, SoftmaxCrossEntropy
from scratchcnn.app.bench import make_model
from scratchcnn.fast import compile, keep_freed_memory
from workers import infer, rates, repeat, train_step  # this folder's benchmarks/workers.py

OUT = Path(__file__).resolve().parent / "results" / "process-split.txt"
ARCHS = ("seed", "keras", "user", "fast")
BATCH = 1000
# Calls in a row of one variant. In windows of two calls the split timed 0.91x to 1.02x the
# threads at batch 64, in windows of four 1.2x to 1.38x (ad hoc): what ran just before (likely
# OpenBLAS's threads still spinning, the other variants' memory in the cache) weighs more in a
# short window.
WINDOW = 5


def case(arch: str, what: str, batch: int, rounds: int) -> tuple[dict, bool, bool]:
    """Rates of one worker, two threads and two processes for one net and batch; whether the
    batch split over the processes, and whether its logits equal the threads'."""
    model = make_model(arch, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *model.input_shape), model.dtype)
    nets = {
        "1": compile(model, 1),
        "2": compile(model, 2, processes=False),
        "procs": compile(model, 2),
    }
    nets["procs"].start_processes(batch)
    split = len(nets["procs"].process_parts(batch, training=what == "train")) > 1
    try:
        if what == "infer":
            same = np.array_equal(
                nets["procs"].forward(x, training=False), nets["2"].forward(x, training=False)
            )
            work = {name: functools.partial(infer, net, x) for name, net in nets.items()}
        else:
            y, loss = rng.integers(0, 10, batch), SoftmaxCrossEntropy()
            twin = copy.deepcopy(model)
            threads = compile(twin, 2, processes=False).train_step(x, y, loss)[1]
            same = np.array_equal(nets["procs"].train_step(x, y, loss)[1], threads)
            optimizer = SGD(model.parameters(), lr=1e-3, momentum=0.9)
            work = {
                name: functools.partial(train_step, net, x, y, loss, optimizer)
                for name, net in nets.items()
            }
        runs: dict[str, Callable[[int], None]] = {
            name: functools.partial(repeat, run) for name, run in work.items()
        }
        return rates(runs, batch, WINDOW, rounds), split, same
    finally:
        nets["procs"].close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    keep_freed_memory()
    lines = [
        "images/s: one worker thread (BLAS on 2 threads), two worker threads, and this process "
        f"with a child process (scratchcnn.fast.processes); medians of {args.rounds} "
        "interleaved rounds",
        f"{'net':<6} {'what':<10} {'1 worker':>9} {'2 threads':>10} {'2 procs':>9} "
        f"{'procs/threads':>13} same logits",
    ]
    for arch in ARCHS:
        for what, batch in (("train", 64), ("train", 256), ("infer", BATCH)):
            rate, split, same = case(arch, what, batch, args.rounds)
            note = "" if split else "  (not split over processes: threads)"
            line = (
                f"{arch:<6} {what + ' ' + str(batch):<10} {rate['1']:>9,.0f} {rate['2']:>10,.0f} "
                f"{rate['procs']:>9,.0f} {rate['procs'] / rate['2']:>13.2f} "
                f"{'yes' if same else 'no'}{note}"
            )
            print(line, flush=True)
            lines.append(line)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
