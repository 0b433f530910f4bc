"""Where a training step's time goes, layer by layer (forward and backward separately).

    python benchmarks/profile_layers.py [--arch keras] [--batch 256] [--steps 30] [--workers N]
    python benchmarks/profile_layers.py --infer [--arch keras] [--batch 1000]   (inference)
    python benchmarks/profile_layers.py --processes [--arch user] [--batch 64]

Steps run as in training: ``scratchcnn.fast.compile(model).train_step`` and an SGD step, or,
with ``--plain``, the plain model's own ``train_step``. When the batch is split over worker
threads (see src/scratchcnn/fast/parallel.py), the ops timed are those of the copy that runs
the first part, while the other parts run beside it: the figures include what the threads cost
each other. "outside the ops" is the rest of the step: handing the parts to the threads and
waiting for the last one, the loss, the optimizer. With ``--infer`` a step is the compiled
model's inference pass, ``forward(x, training=False)``.

With ``--processes`` the batch is split over this process and child processes (started before
the timing), as in the bench and in training once batches have run two seconds: the ops timed
are those that run this process's part, while the children run theirs (one BLAS thread each),
and "outside the ops" is then handing the parts out, waiting for the children, and summing.

Ops are timed in the order the compiled model runs them: a ReLU before a max-pool runs after
it, and a convolution runs fused with the max-pool that follows it (see fast/plan.py).
``--arch user`` is the benchmark's user-style net (see scratchcnn.app.bench).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from scratchcnn import SGD, SoftmaxCrossEntropy
from scratchcnn.app.bench import make_model
from scratchcnn.fast import compile


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


def first_part(args: argparse.Namespace, model, runner, training: bool) -> tuple:
    """How the batch is split (its parts), the layers or ops that run the first part, in the
    order they run, and what they run on, for the plain model, the child processes or the
    worker threads."""
    if args.plain:
        return [slice(0, args.batch)], model.layers, "1 worker"
    if args.processes:
        parts = runner.process_parts(args.batch, training)
        on = f"this process and {runner.workers - 1} child process(es)"
        return parts, runner.process_ops(training), on
    parts = runner.parallel_parts(args.batch, training)
    if len(parts) > 1:
        order = runner.ops_of_part(0, training)
    else:
        order = runner.ops if training else runner.inference_ops
    return parts, order, f"{runner.workers} worker(s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="keras")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, help="threads (default: as many as BLAS has)")
    parser.add_argument("--plain", action="store_true", help="the plain engine, layer by layer")
    parser.add_argument("--infer", action="store_true", help="inference passes, not steps")
    parser.add_argument("--processes", action="store_true", help="split over child processes")
    args = parser.parse_args()
    model = make_model(args.arch, seed=0)
    runner = model if args.plain else compile(model, args.workers, processes=args.processes)
    if args.processes and not runner.start_processes(args.batch):
        parser.error(f"{args.arch} at batch {args.batch} does not split over child processes")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, *model.input_shape), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    loss = SoftmaxCrossEntropy()
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        if args.infer:
            runner.forward(x, training=False)
            return
        runner.train_step(x, y, loss)
        optimizer.step()

    step()  # builds the copies of a split model
    training = not args.infer
    parts, order, on = first_part(args, model, runner, training)
    what = "an inference pass" if args.infer else "a step"
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
        f"{args.arch}, batch {args.batch} in {len(parts)} part(s) of {part}+ on {on}, "
        f"{'plain' if args.plain else 'compiled'}: "
        f"{1000 * total / args.steps:.1f} ms {what} "
        f"({args.batch * args.steps / total:,.0f} img/s)"
    )
    width = max(50, *(len(repr(layer)) for layer in order))
    print(f"{'op (first part)':<{width}} {'forward ms':>10} {'backward ms':>11} {'share':>6}")
    inside, per_step = 0.0, total / args.steps
    for layer in order:
        f, b = (totals[(id(layer), name)] / args.steps for name in ("forward", "backward"))
        inside += f + b
        share = 100 * (f + b) / per_step
        print(f"{layer!r:<{width}} {1000 * f:>10.2f} {1000 * b:>11.2f} {share:>5.1f}%")
    outside = per_step - inside
    share = 100 * outside / per_step
    print(f"{'outside the ops':<{width}} {1000 * outside:>22.2f} {share:>5.1f}%")


if __name__ == "__main__":
    main()
