"""Training speed and page faults with malloc as the system set it, and with freed memory kept
(``scratchcnn.fast.keep_freed_memory``), timed in one run, interleaved.

    python benchmarks/allocator.py [--rounds 5]
    python benchmarks/allocator.py --evaluate [--rounds 8] [--data DIR]

Each timing runs in a fresh process (the setting is process-wide and one-way): the plain
engine's ``train_step``, the compiled one's (``compile(model).train_step``) and PyTorch's twin
of the net (2 threads, as in ``scratchcnn bench``), each with an SGD step, for the bench's nets
at batch 64 and 256; then, in the same process, inference of a batch of 1000. The processes
alternate between the two settings for ``--rounds`` rounds, so a slow spell hits both; each
figure is the median. Writes ``benchmarks/results/allocator.txt``.

``--evaluate`` times what ``scratchcnn evaluate`` runs instead (and ``Classifier.predict`` on
many images): the bundled model's ``Classifier.evaluate`` of the 10,000 MNIST test images
(chunks of 1000, the compiled path), in fresh processes alternating the same way, and writes
``benchmarks/results/allocator-evaluate.txt``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

# Runs in the child: images per second and page faults a step, after warm-up steps.
CHILD = """
import resource, sys, time
from scratchcnn.app.bench import ours, theirs
from scratchcnn.fast import keep_freed_memory
arch, batch, path, keep = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
if keep:
    assert keep_freed_memory()
if path == "torch":
    train, infer = theirs(arch, batch, 2)
else:
    train, infer = ours(arch, batch, plain=path == "plain")
for _ in range(5):
    train()
steps = max(5, 4096 // batch)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = time.perf_counter()
for _ in range(steps):
    train()
seconds = time.perf_counter() - start
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
infer()
start = time.perf_counter()
for _ in range(3):
    infer()  # a batch of 1000
print(steps * batch / seconds, faults / steps, 3000 / (time.perf_counter() - start))
"""

# Runs in the child for --evaluate: images per second and page faults per 1000 images.
CHILD_EVALUATE = """
import resource, sys, time
from scratchcnn.app import Classifier, default_model
from scratchcnn.data import load
from scratchcnn.fast import keep_freed_memory
if sys.argv[2] == "1":
    assert keep_freed_memory()
images, labels = load("mnist", "test", sys.argv[1])
model = Classifier.load(default_model())
model.evaluate(images[:1000], labels[:1000])
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = time.perf_counter()
for _ in range(3):
    model.evaluate(images, labels)
seconds = time.perf_counter() - start
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(3 * len(images) / seconds, faults / (3 * len(images) / 1000))
"""

CASES = [(arch, batch) for arch in ("seed", "keras", "user") for batch in (64, 256)]
PATHS = ("plain", "compiled", "torch")


def in_fresh_process(code: str, *args: str) -> tuple[float, ...]:
    """The figures a child program prints, run in a new Python process. The child sets malloc
    itself, so SCRATCHCNN_KEEP_MEMORY=0 in this process's environment must not reach it."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, check=True,
        env={**os.environ, "SCRATCHCNN_KEEP_MEMORY": "1"},
    ).stdout.split()  # fmt: skip
    return tuple(map(float, out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="rounds (default: 5, or 8 with --evaluate)")
    parser.add_argument("--evaluate", action="store_true", help="time Classifier.evaluate")
    parser.add_argument("--data", type=Path, default=DATA, help="the MNIST files (--evaluate)")
    args = parser.parse_args()
    if args.evaluate:
        evaluate(args.rounds or 8, args.data)
        return
    args.rounds = args.rounds or 5
    runs: dict[tuple, list[tuple[float, ...]]] = {}
    for round_ in range(args.rounds):
        for keep in ("0", "1"):
            for arch, batch in CASES:
                for path in PATHS:
                    figures = in_fresh_process(CHILD, arch, str(batch), path, keep)
                    runs.setdefault((arch, batch, path, keep), []).append(figures)
        print(f"round {round_ + 1} of {args.rounds}", flush=True)
    lines = [
        "training images/s (train_step + SGD) and page faults a step, and inference images/s "
        f"(batch 1000); medians of {args.rounds} interleaved rounds of fresh processes; "
        "system: malloc as the system set it, kept: keep_freed_memory()",
        f"{'net':<6} {'batch':>5} {'path':<9}| {'system':>8} {'kept':>8} {'kept/system':>11} | "
        f"{'faults: system':>14} {'kept':>6} | {'infer: system':>13} {'kept':>8} "
        f"{'kept/system':>11}",
    ]
    for arch, batch in CASES:
        for path in PATHS:
            system = runs[(arch, batch, path, "0")]
            kept = runs[(arch, batch, path, "1")]
            rate_s, faults_s, infer_s = (
                statistics.median(col) for col in zip(*system, strict=True)
            )
            rate_k, faults_k, infer_k = (statistics.median(col) for col in zip(*kept, strict=True))
            lines.append(
                f"{arch:<6} {batch:>5} {path:<9}| {rate_s:>8,.0f} {rate_k:>8,.0f} "
                f"{rate_k / rate_s:>11.2f} | {faults_s:>14,.0f} {faults_k:>6,.0f} | "
                f"{infer_s:>13,.0f} {infer_k:>8,.0f} {infer_k / infer_s:>11.2f}"
            )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out = RESULTS / "allocator.txt"
    out.write_text(text)
    print(f"wrote {out}")


def evaluate(rounds: int, data: Path) -> None:
    """The --evaluate A/B (see the module's docstring)."""
    runs: dict[str, list[tuple[float, ...]]] = {"0": [], "1": []}
    for round_ in range(rounds):
        for keep in ("0", "1") if round_ % 2 == 0 else ("1", "0"):
            runs[keep].append(in_fresh_process(CHILD_EVALUATE, str(data), keep))
        print(f"round {round_ + 1} of {rounds}", flush=True)
    (rate_s, faults_s), (rate_k, faults_k) = (
        [statistics.median(col) for col in zip(*runs[keep], strict=True)] for keep in "01"
    )
    ratios = sorted(k[0] / s[0] for s, k in zip(runs["0"], runs["1"], strict=True))
    text = (
        "Classifier.evaluate of the 10,000 MNIST test images, bundled model, compiled path: "
        f"images/s and page faults per 1000 images; medians of {rounds} interleaved rounds of "
        "fresh processes (the order within a round alternating); system: malloc as the system "
        "set it, kept: keep_freed_memory()\n"
        f"images/s: system {rate_s:,.0f}, kept {rate_k:,.0f}, kept/system {rate_k / rate_s:.2f} "
        f"(per round {ratios[0]:.2f} to {ratios[-1]:.2f})\n"
        f"page faults per 1000 images: system {faults_s:,.0f}, kept {faults_k:,.0f}\n"
    )
    print(text, end="")
    out = RESULTS / "allocator-evaluate.txt"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
