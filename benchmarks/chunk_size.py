"""How large the chunks of a training part should be.

    python benchmarks/chunk_size.py [--rounds 5] [--seconds 1]

``scratchcnn.fast.parallel.part_step`` runs a part of a training batch in chunks of about
``CHUNK_VALUES`` activation values (a sample's layer outputs, times its samples), one after
another, and sums their gradients, so that what a chunk's backward reads is still in cache. This
times a training step (``train_step`` and an SGD step) of the bench's nets without batch norm,
split over this process and a child as the bench runs it, with each part whole and in chunks
of several sizes, interleaved in windows of ``--seconds`` each; images/s, medians over the
rounds, malloc keeping freed memory as in the bench. A chunk of k samples is set as k samples'
values; the last column says what the CHUNK_VALUES in force picks. Writes
benchmarks/results/chunk-size.txt.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from scratchcnn import SGD, SoftmaxCrossEntropy
from scratchcnn.app.bench import blas_info, cut, make_model, median_rate
from scratchcnn.fast import compile, keep_freed_memory, parallel

OUT = Path(__file__).resolve().parent / "results" / "chunk-size.txt"
CASES = {  # batch: the most samples a chunk may hold, for each setting tried
    "seed": {128: (32,), 256: (32, 64)},
    "keras": {64: (11, 16), 128: (13, 16, 22, 32), 256: (13, 16, 22, 32, 43, 64)},
    "user": {64: (16,), 128: (16, 22, 32), 256: (16, 19, 22, 32, 43, 64)},
}


def runner(arch: str, batch: int, chunk: int | None):
    """A training step of ``arch`` at ``batch``, split over this process and a child, each
    part in chunks of at most ``chunk`` samples (None: whole)."""
    model = make_model(arch, seed=0)
    in_force = parallel.CHUNK_VALUES, parallel.CHUNKS
    parallel.CHUNKS = chunk is not None
    parallel.CHUNK_VALUES = (chunk or 1) * parallel.values_per_sample(model)
    try:
        net = compile(model, 2)
        if not net.start_processes(batch):
            raise SystemExit(f"{arch} at batch {batch} does not split over processes")
    finally:
        parallel.CHUNK_VALUES, parallel.CHUNKS = in_force
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *model.input_shape), model.dtype)
    y, loss = rng.integers(0, 10, batch), SoftmaxCrossEntropy()
    optimizer = SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        net.train_step(x, y, loss)
        optimizer.step()

    return net, step


def case(arch: str, batch: int, chunks: tuple[int, ...], rounds: int, seconds: float) -> str:
    """One line: images/s with the parts whole and in each size of chunks."""
    settings = (None, *chunks)
    nets, runs = [], {}
    for chunk in settings:
        net, step = runner(arch, batch, chunk)
        nets.append(net)
        runs[chunk] = median_rate(step, batch, seconds)
    for run in runs.values():  # warm-up
        run()
    rates: dict = {chunk: [] for chunk in settings}
    for round_ in range(rounds):  # in turn, the order reversed every other round
        for chunk in sorted(runs, key=lambda c: c or 0, reverse=round_ % 2 == 1):
            rates[chunk].append(runs[chunk]())
    for net in nets:
        net.close()
    part = batch // 2
    whole = statistics.median(rates[None])
    cells = [f"{whole:>8,.0f}"]
    for chunk in chunks:
        rate = statistics.median(rates[chunk])
        cells.append(f"{in_chunks(part, chunk):>5}: {rate:>7,.0f} {cut(rate / whole):.2f}x")
    picks = in_chunks(part, parallel.chunk_samples(make_model(arch)))
    return f"{arch:<6} {batch:>5} {part:>5} | " + " | ".join(cells) + f" | {picks}"


def in_chunks(part: int, chunk: int | None) -> str:
    """How ``part_step`` cuts a part into chunks of at most ``chunk``: "4x32", or "whole"."""
    if chunk is None or chunk >= part:
        return "whole"
    sizes = [s.stop - s.start for s in parallel.split(part, -(-part // chunk))]
    return f"{len(sizes)}x{max(sizes)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    keep_freed_memory()
    lines = [
        f"{blas_info()['name']}; a training step split over this process and 1 child; "
        f"images/s, medians of {args.rounds} interleaved rounds of {args.seconds:g} s",
        f"CHUNK_VALUES in force: {parallel.CHUNK_VALUES:,} values; per sample: "
        + ", ".join(f"{arch} {parallel.values_per_sample(make_model(arch)):,}" for arch in CASES),
        "net    batch  part |    whole | in chunks (count x samples): images/s, over whole "
        "| CHUNK_VALUES picks",
    ]
    for line in lines:
        print(line, flush=True)
    for arch, batches in CASES.items():
        for batch, chunks in batches.items():
            line = case(arch, batch, chunks, args.rounds, args.seconds)
            print(line, flush=True)
            lines.append(line)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
