"""Where a training step's time goes, layer by layer (forward and backward separately).

    python benchmarks/profile_layers.py [--arch keras] [--batch 256] [--steps 30] [--workers N]

Steps run as in training (``Sequential.train_step`` and an SGD step). When the batch is split
over worker threads (see src/scratchcnn/parallel.py), the layers timed are those of the copy
that runs the first part, while the other parts run beside it: the figures include what the
threads cost each other. "outside the layers" is the rest of the step: handing the parts to
the threads and waiting for the last one, the loss, the optimizer.

Layers are timed in the order the model runs them: a ReLU before a max-pool runs after it, and
a convolution runs fused with the max-pool that follows it (see model.Sequential).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from scratchcnn import SGD, SoftmaxCrossEntropy, build


def timed(layer, totals: dict) -> None:
    """Wrap ``layer.forward`` and ``layer.backward`` to add their seconds to ``totals``."""
    for name in ("forward", "backward"):
        method, key = getattr(layer, name), (id(layer), name)

        def wrapper(*args, _method=method, _key=key, **kwargs):
            start = time.perf_counter()
            result = _method(*args, **kwargs)
            totals[_key] += time.perf_counter() - start
            return result

        setattr(layer, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="keras")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, help="threads (default: as many as BLAS has)")
    args = parser.parse_args()
    model = build(args.arch, seed=0)
    if args.workers:
        model.workers = args.workers
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    loss = SoftmaxCrossEntropy()
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        model.train_step(x, y, loss)
        optimizer.step()

    step()  # builds the copies of a split model
    parts = model.parallel_parts(args.batch)
    order = model.layers_of_part(0) if len(parts) > 1 else model.execution_order
    totals: dict = defaultdict(float)
    for layer in order:
        timed(layer, totals)
    for _ in range(3):
        step()
    totals.clear()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    total = time.perf_counter() - start
    part = parts[0].stop - parts[0].start
    print(
        f"{args.arch}, batch {args.batch} in {len(parts)} part(s) of {part}+ on "
        f"{model.workers} worker(s): {1000 * total / args.steps:.1f} ms a step "
        f"({args.batch * args.steps / total:,.0f} img/s)"
    )
    print(f"{'layer (first part)':<50} {'forward ms':>10} {'backward ms':>11} {'share':>6}")
    inside, per_step = 0.0, total / args.steps
    for layer in order:
        f, b = (totals[(id(layer), name)] / args.steps for name in ("forward", "backward"))
        inside += f + b
        share = 100 * (f + b) / per_step
        print(f"{layer!r:<50} {1000 * f:>10.2f} {1000 * b:>11.2f} {share:>5.1f}%")
    outside = per_step - inside
    share = 100 * outside / per_step
    print(f"{'outside the layers':<50} {1000 * outside:>22.2f} {share:>5.1f}%")


if __name__ == "__main__":
    main()
