"""The named recipes: the fast one learns in CI time, and a fixed seed repeats itself exactly.

The full runs behind the README's results table are not CI tests (minutes to an hour); these
check, on slices of the real data, that the same code paths learn and are reproducible.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from scratchcnn.app import Classifier
from scratchcnn.data import load, train_val_split
from scratchcnn.training import RECIPES, get_recipe


def test_every_recipe_names_a_real_architecture():
    for name, recipe in RECIPES.items():
        Classifier.create(recipe.arch)  # raises for an unknown architecture
        assert recipe.epochs >= 1 and recipe.lr > 0, name
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("slow")


def test_fast_recipe_learns_in_about_a_minute(mnist_dir):
    images, labels = load("mnist", "train", mnist_dir)
    test_x, test_y = load("mnist", "test", mnist_dir)
    (train_x, train_y), (val_x, val_y) = train_val_split(images[:24000], labels[:24000], 2000)
    clf = Classifier.create("fast", seed=0)
    start = time.perf_counter()
    # The full recipe (one-cycle, augmentation, batch norm, weight decay), two epochs.
    clf.fit(train_x, train_y, recipe=get_recipe("fast"), val=(val_x, val_y), epochs=2)
    seconds = time.perf_counter() - start
    accuracy = clf.evaluate(test_x[:2000], test_y[:2000])["accuracy"]
    print(
        f"fast recipe, 2 epochs on 22,000 images ({seconds:.0f} s): {100 * accuracy:.2f}% "
        "on 2,000 test images"
    )
    assert accuracy > 0.95
    assert clf.history[-1]["val_accuracy"] > 0.95


def test_a_fixed_seed_reproduces_the_same_weights(mnist_dir):
    images, labels = load("mnist", "train", mnist_dir)
    runs = []
    for _ in range(2):
        clf = Classifier.create("fast", seed=7)
        clf.fit(images[:3000], labels[:3000], recipe=get_recipe("fast"), epochs=1, seed=7)
        runs.append(clf.model.state_dict())
    for key in runs[0]:
        np.testing.assert_array_equal(runs[0][key], runs[1][key], err_msg=key)
