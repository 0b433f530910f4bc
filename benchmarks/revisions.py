"""The speed of two revisions of scratchcnn, timed in one run, interleaved.

    python benchmarks/revisions.py [--train | --augment | --plain] [--out FILE] BEFORE [AFTER]
                                                                    (AFTER: the work tree)

Each revision's ``src/`` is checked out into a temporary git worktree (AFTER defaults to this
checkout's own ``src/``), and each timing runs in a fresh Python process that imports that
tree. Inference: ``Classifier.predict_proba`` on random uint8 images, at batch 1 and 1000, for
the bench's nets (table: benchmarks/results/inference-revisions.txt). ``--train``: training
steps (``compile(model).train_step`` and an SGD step, as ``scratchcnn train`` runs them) at
batch 128, for the nets of the recipes and the bench (benchmarks/results/training-revisions.txt);
``--augment``: the same, each batch first warped by the ``affine`` policy, as the ``fast`` and
``best`` recipes train (benchmarks/results/augmented-training-revisions.txt);
``--plain``: the plain engine's own ``train_step`` at batch 64 and 256, for the bench's nets
(benchmarks/results/plain-training-revisions.txt).
``--out`` writes the table to FILE instead (a comparison to keep beside the others).
The processes alternate between the revisions for five rounds, so a slow spell hits both; each
figure is the median. Run it on a machine with nothing else running.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from scratchcnn.app.bench import cut

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ROUNDS = 5

# The end of each child: images per second of ``calls`` calls of its ``work()`` on a batch of
# ``batch``, the best of three timed loops.
BEST_OF_THREE = """
best = 0.0
for _ in range(3):
    start = time.perf_counter()
    for _ in range(calls):
        work()
    best = max(best, calls * batch / (time.perf_counter() - start))
print(best)
"""

# Runs in the child: images per second of predict_proba, best of a few timed loops of ~0.5 s.
TIMING = (
    """
import sys, time
import numpy as np
from scratchcnn.app.bench import make_model
from scratchcnn.app.classifier import Classifier
arch, batch = sys.argv[1], int(sys.argv[2])
clf = Classifier(make_model(arch), arch)
images = np.random.default_rng(0).integers(0, 256, (batch, 28, 28), dtype=np.uint8)
def work():
    clf.predict_proba(images)
calls = 2000 if batch == 1 else 6
for _ in range(calls // 3 + 1):
    work()
"""
    + BEST_OF_THREE
)

# Runs in the child: images per second of training steps, best of three timed loops.
TRAINING = (
    """
import sys, time
import numpy as np
from scratchcnn import SGD, SoftmaxCrossEntropy
from scratchcnn.app.bench import make_model
from scratchcnn.fast import compile
from scratchcnn.training.augment import POLICIES
arch, batch, options = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
plain = "plain" in options
policy = [option.split("=")[1] for option in options if option.startswith("augment=")]
augment = POLICIES[policy[0]] if policy else None
model = make_model(arch)
fast, loss = (model if plain else compile(model)), SoftmaxCrossEntropy()
optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
rng = np.random.default_rng(0)
x = rng.random((batch, 28, 28, 1), dtype=np.float32)
y = rng.integers(0, 10, batch)
def work():
    fast.train_step(x if augment is None else augment(x, rng), y, loss)
    optimizer.step()
for _ in range(3):
    work()
start = time.perf_counter()
work()
calls = max(3, int(0.5 / (time.perf_counter() - start)))
"""
    + BEST_OF_THREE
)
# mode: (child, nets, batches, results file, what the figures are)
MODES = {
    "infer": (
        TIMING, ("seed", "keras", "user", "fast"), (1, 1000), "inference-revisions.txt",
        "images/s, Classifier.predict_proba on random uint8 images",
    ),
    "train": (
        TRAINING, ("quick", "fast", "best", "keras", "user"), (128,), "training-revisions.txt",
        "images/s, compiled train_step + SGD step on random images",
    ),
    "augment": (
        TRAINING, ("quick", "best"), (128,), "augmented-training-revisions.txt",
        "images/s, affine warps + compiled train_step + SGD step on random images",
    ),
    "plain": (
        TRAINING, ("seed", "keras", "user"), (64, 256), "plain-training-revisions.txt",
        "images/s, the plain engine's train_step + SGD step on random images",
    ),
}  # fmt: skip


def rate(child: str, src: Path, arch: str, batch: int, *extra: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(
        [sys.executable, "-c", child, arch, str(batch), *extra],
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
    out_file = None
    if "--out" in argv:  # the table's file, instead of the mode's own
        at = argv.index("--out")
        out_file, argv = argv[at + 1], argv[:at] + argv[at + 2 :]
    flags = {"--train": "train", "--augment": "augment", "--plain": "plain"}
    modes = [flags[arg] for arg in argv if arg in flags]
    argv = [arg for arg in argv if arg not in flags]
    if len(modes) > 1:
        raise SystemExit(__doc__)
    mode = modes[0] if modes else "infer"
    extra = {"plain": ("plain",), "augment": ("augment=affine",)}.get(mode, ())
    if not argv or len(argv) > 2:
        raise SystemExit(__doc__)
    child, nets, batches, out_name, what = MODES[mode]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {argv[0]: worktree(argv[0], Path(tmp) / "before")}
        if len(argv) == 2:
            trees[argv[1]] = worktree(argv[1], Path(tmp) / "after")
        else:
            trees["work tree"] = ROOT / "src"
        try:
            rows = []
            for arch in nets:
                for batch in batches:
                    rates: dict[str, list[float]] = {name: [] for name in trees}
                    for _ in range(ROUNDS):
                        for name, src in trees.items():
                            rates[name].append(rate(child, src, arch, batch, *extra))
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
        f"{what}, median of {ROUNDS} interleaved rounds; before = {before}, after = {after}",
        f"{'net':<6} {'batch':>5} | {'before':>9} {'after':>9} | {'after/before':>12}",
    ]
    lines += [f"{a:<6} {b:>5} | {x:>9,.0f} {y:>9,.0f} | {cut(y / x):>12.2f}" for a, b, x, y in rows]
    out = RESULTS / out_name if out_file is None else Path(out_file).resolve()
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
