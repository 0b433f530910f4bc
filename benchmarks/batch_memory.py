"""What a small batch gains from keeping its memory between calls (``BatchMemory`` in
``src/scratchcnn/fast/inference.py``).

    python benchmarks/batch_memory.py

A batch that runs as one chunk (one drawing, a photo's few digits) spent much of each call
setting up: padding, strided views, new arrays. The inference ops now keep that memory for
the last few input shapes. This times ``Classifier.predict_proba`` on random uint8 images at
batch 1 and 5, for each named net and the bench's user net, with the memory kept and with it
switched off (``MEMORY_SHAPES = 0``), in one process: the two settings alternate in windows of
100 calls, 100 windows each, and each figure is the median window's microseconds (and page
faults) per call.
Timings on these machines swing by up to 2x within minutes; short alternating windows put
both settings in the same spells. Writes benchmarks/results/batch-memory.txt.
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import numpy as np

from scratchcnn.app import Classifier
from scratchcnn.app.bench import make_model
from scratchcnn.fast import inference

OUT = Path(__file__).resolve().parent / "results" / "batch-memory.txt"
WINDOWS, CALLS = 100, 100


def window(clf: Classifier, images: np.ndarray, shapes: int) -> tuple[float, float]:
    """Microseconds and page faults per call of ``CALLS`` calls with MEMORY_SHAPES set to
    ``shapes``."""
    inference.MEMORY_SHAPES = shapes
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(CALLS):
        clf.predict_proba(images)
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return seconds / CALLS * 1e6, faults / CALLS


def main() -> None:
    kept = inference.MEMORY_SHAPES
    lines = [
        f"microseconds per predict_proba call, median of {WINDOWS} windows of {CALLS} calls; "
        "memory kept against switched off, alternating",
        f"{'net':<6} {'batch':>5} | {'kept':>8} {'off':>8} | {'off/kept':>8} | "
        f"{'page faults a call, kept':>24} {'off':>6}",
    ]
    for arch in ("seed", "keras", "user", "fast", "best"):
        clf = Classifier(make_model(arch, seed=0), arch)
        for batch in (1, 5):
            images = np.random.default_rng(0).integers(0, 256, (batch, 28, 28), dtype=np.uint8)
            inference.MEMORY_SHAPES = 0
            fresh = clf.predict_proba(images)
            inference.MEMORY_SHAPES = kept
            if not np.array_equal(clf.predict_proba(images), fresh):
                raise SystemExit(f"{arch}: the kept memory changed the probabilities")
            times: dict[int, list[tuple[float, float]]] = {kept: [], 0: []}
            for i in range(WINDOWS):
                for shapes in (kept, 0) if i % 2 else (0, kept):
                    times[shapes].append(window(clf, images, shapes))
            on, off = (statistics.median(t for t, _ in times[s]) for s in (kept, 0))
            faults_on, faults_off = (statistics.median(f for _, f in times[s]) for s in (kept, 0))
            lines.append(
                f"{arch:<6} {batch:>5} | {on:>8.1f} {off:>8.1f} | {off / on:>8.2f} | "
                f"{faults_on:>24.1f} {faults_off:>6.1f}"
            )
            print(lines[-1], flush=True)
    inference.MEMORY_SHAPES = kept
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
