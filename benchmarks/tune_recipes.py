"""Candidate settings for the quick and fast recipes, judged on validation only.

    python benchmarks/tune_recipes.py mnist qa qb ...   (names: see CANDIDATES)

Each candidate trains on the 55,000 training images that ``scratchcnn train`` uses and is
measured on its 5,000 validation images (the same split), with and without test-time shifts.
One JSON line per run is appended to docs/results/tuning.jsonl: the settings, the training time
and the validation accuracy (``val_final``: with the candidate's own ``tta`` setting; the runs
from ``qd`` on also record the other one). The test set is not touched.
"""

import json
import sys
import time
from pathlib import Path

from scratchcnn import BatchNorm1D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sequential
from scratchcnn.app import Classifier
from scratchcnn.data import load, train_val_split
from scratchcnn.training import Recipe
from scratchcnn.training.architectures import conv_bn_relu
from scratchcnn.training.augment import POLICIES, mirror, random_affine

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "tuning.jsonl"
BASE = dict(
    schedule="onecycle", warmup=0.15, batch_size=128, weight_decay=5e-4, label_smoothing=0.05
)
BEST = dict(BASE, warmup=0.2, epochs=12, ema=0.999, tta=True)  # best's, but lr and augment
CANDIDATES = {
    "qa": ("fast", dict(BASE, lr=0.1, epochs=2, augment="none")),
    "qb": ("quick", dict(BASE, lr=0.1, epochs=3, augment="none")),
    "qc": ("quick", dict(BASE, lr=0.2, epochs=3, augment="none", batch_size=256)),
    "fa": ("fast", dict(BASE, lr=0.2, epochs=4, augment="affine", batch_size=256)),
    "fb": ("fast", dict(BASE, lr=0.1, epochs=3, augment="none", tta=True)),
    "fc": ("fast", dict(BASE, lr=0.2, epochs=4, augment="none", batch_size=256, tta=True)),
    "qd": ("quick", dict(BASE, lr=0.1, epochs=5, augment="none")),
    "qe": ("quick", dict(BASE, lr=0.1, epochs=5, augment="affine")),
    "qf": ("quick", dict(BASE, lr=0.1, epochs=5, augment="none", ema=0.99)),
    "qg": ("quick", dict(BASE, lr=0.1, epochs=4, augment="affine")),
    "fe": ("quick", dict(BASE, lr=0.1, epochs=8, augment="affine")),
    "ff": ("quick", dict(BASE, lr=0.2, epochs=8, augment="affine", batch_size=256)),
    # fast (fe) at higher peak rates, as best gained from 0.2 (run bd).
    "fh": ("quick", dict(BASE, lr=0.2, epochs=8, augment="affine", tta=True)),
    "fi": ("quick", dict(BASE, lr=0.15, epochs=8, augment="affine", tta=True)),
    # fast's recipe with best's average of the weights: fast's seed 1 ended at 99.29% on the
    # test set, under the 99.3% that issue 16 asks of every run. It ended at 99.06% on
    # validation, as fe (the recipe) did: not taken.
    "fj": ("quick", dict(BASE, lr=0.1, epochs=8, augment="affine", tta=True, ema=0.999)),
    # fast's recipe one epoch longer: its three seeds took 72.2 to 77.3 s of the 90 s allowed.
    # It ran on a machine twice as slow (19.4 s an epoch, against the recipe logs' 8.7 s), so
    # its time says nothing of the limit; on validation 99.10% against fe's 99.06%, two images
    # of 5,000: within the spread of seeds, not taken then. Taken later, when faster batch
    # norms and warps made room for the ninth epoch in 90 s (docs/results.md).
    "fk": ("quick", dict(BASE, lr=0.1, epochs=9, augment="affine", tta=True)),
    # For best (seed 0's run of the recipe: 99.34% on validation after 12 epochs): the
    # PyTorch calibration's net of issue 16, a 128-unit dense layer and no dropout.
    "ba": ("best-128", dict(BASE, lr=0.05, warmup=0.2, epochs=12, augment="affine", ema=0.999)),
    # best's settings with twice the peak learning rate; then with stronger warps.
    "bb": ("best", dict(BEST, lr=0.1, augment="affine")),
    "bc": ("best", dict(BEST, lr=0.05, augment="warp")),
    # best's recipe (bb) with the peak rate doubled again, 0.2: 0.05 -> 0.1 gained 0.10 points.
    "bd": ("best", dict(BEST, lr=0.2, augment="affine")),
    # For fashion (run with fashion-mnist; the recipe's seed 0 run ended at 93.66% on
    # validation): its settings with best's new peak rate.
    "xa": ("best", dict(BEST, lr=0.1, epochs=20, augment="clothes", label_smoothing=0.1)),
    # The fashion recipe on best's net with padding (28x28 kept through each block, so the
    # border pixels count as much as the centre): twice the FLOPs, so 12 epochs in the time.
    "xb": ("best-pad", dict(BEST, lr=0.05, epochs=12, augment="clothes", label_smoothing=0.1)),
    # The recipe less regularised: its training accuracy (augmented, with dropout) ended below
    # its validation accuracy, so no random erasing and label smoothing 0.05.
    "xc": ("best", dict(BEST, lr=0.05, epochs=20, augment="flipshift", label_smoothing=0.05)),
    # xc trained longer: its training accuracy still rose each epoch, and 20 epochs took 1,054.6 s
    # of the 30 minutes in the test run.
    "xd": ("best", dict(BEST, lr=0.05, epochs=30, augment="mirror", label_smoothing=0.05)),
}
# Augmentations that are not (yet) policies: stronger warps (An et al. 2020 went to 20 degrees
# and 20% shifts).
EXTRA_POLICIES = {
    "warp": lambda x, rng: random_affine(x, rng, max_shift=3.0, max_rotation=15.0, max_scale=0.15),
    "flipshift": mirror,  # run xc's name for what became the policy "mirror"
}
# Nets that are not (yet) named architectures.
NETS = {
    "best-128": lambda classes: [
        *conv_bn_relu(1, 32), *conv_bn_relu(32, 32), MaxPool2D(2),
        *conv_bn_relu(32, 64), *conv_bn_relu(64, 64), MaxPool2D(2),
        Flatten(), Dense(4 * 4 * 64, 128), BatchNorm1D(128), ReLU(), Dense(128, classes),
    ],
    "best-pad": lambda classes: [
        *conv_bn_relu(1, 32, 1), *conv_bn_relu(32, 32, 1), MaxPool2D(2),
        *conv_bn_relu(32, 64, 1), *conv_bn_relu(64, 64, 1), MaxPool2D(2),
        Flatten(), Dense(7 * 7 * 64, 256), BatchNorm1D(256), ReLU(), Dropout(0.4),
        Dense(256, classes),
    ],
}  # fmt: skip


def main() -> None:
    dataset, names = sys.argv[1], sys.argv[2:]
    POLICIES.update(EXTRA_POLICIES)
    images, labels = load(dataset, "train")
    (tx, ty), (vx, vy) = train_val_split(images, labels, 5000, seed=0)
    for name in names:
        arch, settings = CANDIDATES[name]
        if arch in NETS:
            net = Sequential(NETS[arch](10), seed=0)
            clf = Classifier(net, arch, dataset)
        else:
            clf = Classifier.create(arch, dataset=dataset, seed=0)
        start = time.perf_counter()
        clf.fit(tx, ty, recipe=Recipe(arch=arch, **settings), val=(vx, vy))
        record = {
            "name": name,
            "arch": arch,
            **settings,
            "train_seconds": round(clf.training["seconds"], 1),
            "wall": round(time.perf_counter() - start, 1),
            "val_last_epoch": clf.history[-1]["val_accuracy"],
            "val_final": clf.evaluate(vx, vy)["accuracy"],
        }
        clf.tta = not clf.tta
        record[f"val_final_tta_{clf.tta}"] = clf.evaluate(vx, vy)["accuracy"]
        print(json.dumps(record), flush=True)
        with open(OUT, "a") as out:
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
