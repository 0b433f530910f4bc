"""Inference speed of two revisions of scratchcnn, timed in one run, interleaved.

    python benchmarks/inference_revisions.py BEFORE [AFTER]  (git revisions; AFTER: the work tree)

Each revision's ``src/`` is checked out into a temporary git worktree (AFTER defaults to this
checkout's own ``src/``), and each timing runs in a fresh Python process that imports that
tree: ``Classifier.predict_proba`` on random uint8 images, at batch 1 and 1000, for the
bench's nets. The processes alternate between the revisions for five rounds, so a slow spell
hits both; each figure is the median. The table goes to
benchmarks/results/inference-revisions.txt. Run it on a machine with nothing else running.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "inference-revisions.txt"
NETS = ("seed", "keras", "user", "fast")
BATCHES = (1, 1000)
ROUNDS = 5

# Runs in the child: images per second of predict_proba, best of a few timed loops of ~0.5 s.
TIMING = """
import sys, time
import numpy as np
from scratchcnn.app.bench import make_model
from scratchcnn.app.classifier import Classifier
arch, batch = sys.argv[1], int(sys.argv[2])
clf = Classifier(make_model(arch), arch)
images = np.random.default_rng(0).integers(0, 256, (batch, 28, 28), dtype=np.uint8)
calls = 2000 if batch == 1 else 6
for _ in range(calls // 3 + 1):
    clf.predict_proba(images)
best = 0.0
for _ in range(3):
    start = time.perf_counter()
    for _ in range(calls):
        clf.predict_proba(images)
    best = max(best, calls * batch / (time.perf_counter() - start))
print(best)
"""


def rate(src: Path, arch: str, batch: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(
        [sys.executable, "-c", TIMING, arch, str(batch)],
        env=env, capture_output=True, text=True, check=True, cwd=src,
    )  # fmt: skip
    return float(out.stdout.split()[-1])


def worktree(revision: str, into: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(into), revision],
        check=True,
    )
    return into / "src"


def main(argv: list[str]) -> None:
    if not argv or len(argv) > 2:
        raise SystemExit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {argv[0]: worktree(argv[0], Path(tmp) / "before")}
        if len(argv) == 2:
            trees[argv[1]] = worktree(argv[1], Path(tmp) / "after")
        else:
            trees["work tree"] = ROOT / "src"
        try:
            rows = []
            for arch in NETS:
                for batch in BATCHES:
                    rates: dict[str, list[float]] = {name: [] for name in trees}
                    for _ in range(ROUNDS):
                        for name, src in trees.items():
                            rates[name].append(rate(src, arch, batch))
                    medians = [statistics.median(values) for values in rates.values()]
                    rows.append((arch, batch, *medians))
                    print(arch, batch, *(f"{m:,.0f}" for m in medians), flush=True)
        finally:
            for src in trees.values():
                if src != ROOT / "src":
                    subprocess.run(
                        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(src.parent)],
                        check=False,
                    )
    before, after = trees
    lines = [
        f"images/s, Classifier.predict_proba on random uint8 images, median of {ROUNDS} "
        f"interleaved rounds; before = {before}, after = {after}",
        f"{'net':<6} {'batch':>5} | {'before':>9} {'after':>9} | {'after/before':>12}",
    ]
    lines += [f"{a:<6} {b:>5} | {x:>9,.0f} {y:>9,.0f} | {y / x:>12.2f}" for a, b, x, y in rows]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
