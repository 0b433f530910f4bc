"""What a small batch gains from being replayed (``Replay`` in ``src/scratchcnn/fast/replay.py``)
on top of keeping its memory (``BatchMemory`` in ``src/scratchcnn/fast/inference.py``).

    python benchmarks/replay.py [--nets seed keras ...]

Times ``Classifier.predict_proba`` on random uint8 images at batch 1 and 5, for each named net
and the bench's user net, three ways in one process: replayed (the default), with replays
switched off (``replay.REPLAY_SHAPES = 0``: the ops run, with their kept memory), and with
the kept memory switched off too (``inference.MEMORY_SHAPES = 0``). The settings take turns
in windows of 100 calls, 60 windows each, in an order that rotates; each figure is the median
window's microseconds per call. Timings on these machines swing by up to 2x within minutes;
short windows in turn put the settings in the same spells. Checks first that the replay gives
the ops' probabilities bit for bit (without the kept memory a batch that runs as one chunk
may take Winograd's products instead: the same to rounding). Writes
benchmarks/results/replay.txt.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from scratchcnn.app import Classifier
from scratchcnn.app.bench import make_model
from scratchcnn.fast import inference, replay

OUT = Path(__file__).resolve().parent / "results" / "replay.txt"
WINDOWS, CALLS = 60, 100
NETS = ("seed", "keras", "user", "fast", "best")
# name -> (REPLAY_SHAPES, MEMORY_SHAPES)
SETTINGS = {
    "replayed": (replay.REPLAY_SHAPES, inference.MEMORY_SHAPES),
    "memory": (0, inference.MEMORY_SHAPES),
    "neither": (0, 0),
}


def use(setting: str) -> None:
    replay.REPLAY_SHAPES, inference.MEMORY_SHAPES = SETTINGS[setting]


def window(clf: Classifier, images: np.ndarray, setting: str) -> float:
    """Microseconds per call of ``CALLS`` calls with ``setting``."""
    use(setting)
    start = time.perf_counter()
    for _ in range(CALLS):
        clf.predict_proba(images)
    return (time.perf_counter() - start) / CALLS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", nargs="+", default=list(NETS), help="nets (default: all)")
    args = parser.parse_args()
    names = list(SETTINGS)
    lines = [
        f"microseconds per predict_proba call, median of {WINDOWS} windows of {CALLS} calls; "
        "replayed (default), replays off (memory kept), neither; settings in turn",
        f"{'net':<6} {'batch':>5} | {'replayed':>8} {'memory':>8} {'neither':>8} | "
        f"{'memory/replayed':>15} {'neither/replayed':>16}",
    ]
    for arch in args.nets:
        clf = Classifier(make_model(arch, seed=0), arch)
        for batch in (1, 5):
            images = np.random.default_rng(0).integers(0, 256, (batch, 28, 28), dtype=np.uint8)
            results = []
            for setting in names:
                use(setting)
                results.append(clf.predict_proba(images))
            if not np.array_equal(results[0], results[1]):
                raise SystemExit(f"{arch}: the replay changed the probabilities")
            if not np.allclose(results[0], results[2], rtol=1e-4, atol=1e-6):
                raise SystemExit(f"{arch}: without the kept memory the probabilities differ")
            times: dict[str, list[float]] = {name: [] for name in names}
            for i in range(WINDOWS):
                for name in names[i % 3 :] + names[: i % 3]:
                    times[name].append(window(clf, images, name))
            us = {name: statistics.median(values) for name, values in times.items()}
            lines.append(
                f"{arch:<6} {batch:>5} | {us['replayed']:>8.1f} {us['memory']:>8.1f} "
                f"{us['neither']:>8.1f} | {us['memory'] / us['replayed']:>15.2f} "
                f"{us['neither'] / us['replayed']:>16.2f}"
            )
            print(lines[-1], flush=True)
    use("replayed")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
