"""How small a training part may be and still pay for the split over processes.

    python benchmarks/train_part_size.py [--rounds 9] [--seconds 1]

``scratchcnn.fast.processes`` splits a training batch in two (this process and a child) only
when each half holds at least ``MIN_TRAIN_PART_VALUES`` activation values (a sample's layer
outputs, times its samples), or ``MIN_TRAIN_PART_VALUES_NORM`` in a net with batch norm. This
times, for the bench's nets at small batches, a training step (``train_step`` and an SGD step)
with the batch whole (``compile(model, 1)``: one worker, BLAS on two threads, as a batch the
processes do not take runs, unless the worker threads' own split takes it: ``keras`` at 48 and
``fast`` at 32 here, a split that buys little, see docs/performance.md) and split in two over
the processes (the thresholds set to split every batch of two or more), interleaved in
windows of ``--seconds`` each, as the bench times; images/s, medians over the rounds, malloc
keeping freed memory as in the bench.
Windows of a few calls would time the switch between the two (OpenBLAS's threads still
spinning from the whole batch's products take the child's core: see
``benchmarks/process_split.py``'s WINDOW), which a training run never makes. The last column
says what the thresholds in force pick. Writes benchmarks/results/train-part-size.txt.
"""

from __future__ import annotations

import argparse
import functools
import statistics
from pathlib import Path

import numpy as np

from scratchcnn import SGD, SoftmaxCrossEntropy
from scratchcnn.app.bench import cut, make_model, median_rate
from scratchcnn.fast import compile, keep_freed_memory, processes

OUT = Path(__file__).resolve().parent / "results" / "train-part-size.txt"
CASES = {
    "seed": (64, 96, 128, 192),
    "keras": (16, 24, 32, 48),
    "user": (16, 24, 32, 48),
    "fast": (16, 24, 32),
}


def train_step(net, x: np.ndarray, y: np.ndarray, loss, optimizer) -> None:
    net.train_step(x, y, loss)
    optimizer.step()


def case(arch: str, batch: int, rounds: int, seconds: float) -> tuple[dict, bool]:
    """Images/s of one training step whole and split in two over the processes; whether the
    thresholds in force split the batch."""
    model = make_model(arch, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *model.input_shape), model.dtype)
    y, loss = rng.integers(0, 10, batch), SoftmaxCrossEntropy()
    optimizer = SGD(model.parameters(), lr=1e-3, momentum=0.9)
    picks = len(compile(model, 2).process_parts(batch, training=True)) > 1
    in_force = processes.MIN_TRAIN_PART_VALUES, processes.MIN_TRAIN_PART_VALUES_NORM
    processes.MIN_TRAIN_PART_VALUES = processes.MIN_TRAIN_PART_VALUES_NORM = 1  # all split
    try:
        split = compile(model, 2)
    finally:
        processes.MIN_TRAIN_PART_VALUES, processes.MIN_TRAIN_PART_VALUES_NORM = in_force
    nets = {"whole": compile(model, 1), "halves": split}
    try:
        if not split.start_processes(batch) or len(split.process_parts(batch, True)) != 2:
            raise RuntimeError(f"{arch} at {batch}: the child process did not start")
        runs = {
            name: median_rate(
                functools.partial(train_step, net, x, y, loss, optimizer), batch, seconds
            )
            for name, net in nets.items()
        }
        for run in runs.values():  # warm-up
            run()
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(rounds):
            for name in sorted(runs, reverse=round_ % 2 == 1):
                samples[name].append(runs[name]())
        return {name: statistics.median(values) for name, values in samples.items()}, picks
    finally:
        split.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    keep_freed_memory()
    values = processes.MIN_TRAIN_PART_VALUES, processes.MIN_TRAIN_PART_VALUES_NORM
    lines = [
        "training images/s: the batch whole (one worker, BLAS on 2 threads) and split in two "
        f"over a child process; medians of {args.rounds} interleaved rounds of {args.seconds} s; "
        "'splits': what "
        f"MIN_TRAIN_PART_VALUES = {values[0]:,} (with batch norm {values[1]:,}) picks",
        f"{'net':<6} {'batch':>5} {'part':>5} {'whole':>8} {'halves':>8} {'halves/whole':>12} "
        "splits",
    ]
    print(lines[0], lines[1], sep="\n", flush=True)
    for arch, batches in CASES.items():
        for batch in batches:
            rate, picks = case(arch, batch, args.rounds, args.seconds)
            line = (
                f"{arch:<6} {batch:>5} {batch // 2:>5} {rate['whole']:>8,.0f} "
                f"{rate['halves']:>8,.0f} {cut(rate['halves'] / rate['whole']):>12.2f} "
                f"{'yes' if picks else 'no'}"
            )
            print(line, flush=True)
            lines.append(line)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
