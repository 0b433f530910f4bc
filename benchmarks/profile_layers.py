"""Where a training step's time goes, layer by layer (forward and backward separately).

    python benchmarks/profile_layers.py [--arch keras] [--batch 256] [--steps 30]

Layers are timed in the order the model runs them: a ReLU before a max-pool runs after it, and
a convolution runs fused with the max-pool that follows it (see model.Sequential).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from scratchcnn import SGD, SoftmaxCrossEntropy, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="keras")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    model = build(args.arch, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    loss = SoftmaxCrossEntropy()
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
    forward = {id(layer): 0.0 for layer in model.execution_order}
    backward = dict(forward)
    other = 0.0
    for step in range(args.steps + 3):  # 3 warm-up steps
        timed = step >= 3
        out = model.check_input(x)
        for layer in model.execution_order:
            start = time.perf_counter()
            out = layer.forward(out)
            forward[id(layer)] += (time.perf_counter() - start) * timed
        start = time.perf_counter()
        loss.forward(out, y)
        grad = loss.backward()
        other += (time.perf_counter() - start) * timed
        for layer in reversed(model.execution_order):
            start = time.perf_counter()
            grad = layer.backward(grad)
            backward[id(layer)] += (time.perf_counter() - start) * timed
        start = time.perf_counter()
        optimizer.step()
        other += (time.perf_counter() - start) * timed
    total = sum(forward.values()) + sum(backward.values()) + other
    print(
        f"{args.arch}, batch {args.batch}: {1000 * total / args.steps:.1f} ms a step "
        f"({args.batch * args.steps / total:,.0f} img/s)"
    )
    print(f"{'layer':<50} {'forward ms':>10} {'backward ms':>11} {'share':>6}")
    for layer in model.execution_order:
        f, b = forward[id(layer)] / args.steps, backward[id(layer)] / args.steps
        share = 100 * (f + b) * args.steps / total
        print(f"{layer!r:<50} {1000 * f:>10.2f} {1000 * b:>11.2f} {share:>5.1f}%")
    print(
        f"{'loss + optimizer':<50} {1000 * other / args.steps:>22.2f} {100 * other / total:>5.1f}%"
    )


if __name__ == "__main__":
    main()
