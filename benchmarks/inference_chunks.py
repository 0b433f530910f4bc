"""How large a chunk the fused conv + pool's inference should work on (``CHUNK_BYTES`` in
``src/scratchcnn/fast/inference.py``).

    python benchmarks/inference_chunks.py [--gather]

Inference keeps only each pool window's maximum, so it runs a few samples at a time and
reduces each chunk's conv output (PH*PW times larger than what it keeps) while that is still
in cache. This times ``Classifier.predict_proba`` on 1,000 random images for each named net
and the bench's user net, for several chunk sizes (interleaved, median of five rounds; "whole"
is the whole batch at once) and writes the table to benchmarks/results/inference-chunks.txt.

``--gather``: the same for ``GATHER_BYTES`` instead, how many bytes of patches a layer with one
input channel gathers at once ("off": one chunk's, as every other layer), with malloc keeping
freed memory as the bench runs, the sizes in alternating order over 16 rounds of two calls
each; writes benchmarks/results/inference-gather.txt.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

from scratchcnn.app import Classifier
from scratchcnn.app.bench import make_model
from scratchcnn.fast import inference, keep_freed_memory

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "inference-chunks.txt"
SIZES = {"128 KiB": 128 << 10, "256 KiB": 256 << 10, "512 KiB": 512 << 10, "1 MiB": 1 << 20}
SIZES["whole"] = 1 << 50
GATHERS = {"off": 1, "2 MiB": 2 << 20, "4 MiB": 4 << 20, "8 MiB": 8 << 20, "16 MiB": 16 << 20}


def gather_sizes() -> None:
    keep_freed_memory()
    images = np.random.default_rng(0).integers(0, 256, (1000, 28, 28), dtype=np.uint8)
    lines = ["images/s, predict_proba on 1,000 images, GATHER_BYTES: " + ", ".join(GATHERS)]
    for arch in ("seed", "keras", "user", "fast"):
        clf = Classifier(make_model(arch, seed=0), arch)
        rates: dict[str, list[float]] = {name: [] for name in GATHERS}
        for i in range(16):
            for name in list(GATHERS) if i % 2 else list(GATHERS)[::-1]:
                inference.GATHER_BYTES = GATHERS[name]
                clf.predict_proba(images[:100])
                start = time.perf_counter()
                clf.predict_proba(images)
                clf.predict_proba(images)
                rates[name].append(2 * len(images) / (time.perf_counter() - start))
        medians = [statistics.median(r) for r in rates.values()]
        row = "  ".join(f"{m:8,.0f}" for m in medians)
        lines.append(f"{arch:<6} {row}   2 MiB / off: {medians[1] / medians[0]:.2f}")
        print(lines[-1], flush=True)
    out = RESULTS / "inference-gather.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def main() -> None:
    images = np.random.default_rng(0).integers(0, 256, (1000, 28, 28), dtype=np.uint8)
    lines = ["images/s, predict_proba on 1,000 images: " + ", ".join(SIZES)]
    for arch in ("seed", "keras", "user", "fast", "best"):
        clf = Classifier(make_model(arch, seed=0), arch)
        rates: dict[str, list[float]] = {name: [] for name in SIZES}
        for _ in range(5):
            for name, size in SIZES.items():
                inference.CHUNK_BYTES = size
                clf.predict_proba(images[:100])
                start = time.perf_counter()
                clf.predict_proba(images)
                rates[name].append(len(images) / (time.perf_counter() - start))
        row = "  ".join(f"{np.median(r):8,.0f}" for r in rates.values())
        lines.append(f"{arch:<6} {row}")
        print(lines[-1], flush=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    gather_sizes() if "--gather" in sys.argv[1:] else main()
